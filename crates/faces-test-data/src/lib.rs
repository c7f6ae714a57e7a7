//! Where every test and benchmark finds the shared photos: the folder named by
//! `FACES_TEST_DATA`, else `../shared/data` beside the repository (where CI puts
//! it). The photos are never copied into the repository.

use std::path::PathBuf;

/// The variable that names the data folder.
pub const VARIABLE: &str = "FACES_TEST_DATA";

/// The data folder; panics with what to do if it is missing.
pub fn dir() -> PathBuf {
    // Cargo sets CARGO_MANIFEST_DIR for the tests and benchmarks it runs: the crate's
    // folder in this checkout. The one compiled in is a fallback, and may name another
    // checkout whose build the target folder reused.
    let crate_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    let dir = std::env::var_os(VARIABLE)
        .map(PathBuf::from)
        .unwrap_or_else(|| crate_dir.join("../../../shared/data"));
    assert!(
        dir.is_dir(),
        "the shared test photos are not at {}: put them at ../shared/data beside the \
         repository or set {VARIABLE} to their folder",
        dir.display()
    );
    dir
}

/// `relative` inside the data folder, e.g. `path("known_counts/fr_obama.jpg")`.
pub fn path(relative: &str) -> PathBuf {
    dir().join(relative)
}
