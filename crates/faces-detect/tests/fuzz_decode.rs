//! Bounded fuzzing of the public decode path (`guess_format`, `probe`, `decode`) with
//! mutated real files: bit flips, byte overwrites, truncations, inserted and
//! duplicated chunks, and header fields (sizes, bit depths, colour types) set to
//! hostile values, with PNG checksums repaired so the mutation reaches the decoder.
//!
//! Property: nothing panics; every answer is `Ok` or a typed decode error; an `Ok`
//! image respects the pixel limit and agrees with what `probe` read from the header.
//!
//! Cases: `PROPTEST_CASES` (default [`DEFAULT_CASES`]).

use std::io::Cursor;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use faces_detect::{decode, guess_format, probe, DecodeLimits, DetectError};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

mod support;

use support::mutate::{apply, mutation};

const DEFAULT_CASES: u32 = 2000;
/// Small, so that mutated sizes hit the limit and decodes stay cheap; the 500x375
/// reference pictures are under it.
const MAX_PIXELS: u64 = 200_000;
/// A single decode of a small file taking longer than this counts as a hang.
const SLOW: Duration = Duration::from_secs(5);

fn data() -> PathBuf {
    faces_test_data::dir()
}

/// The seed files: every edge file except the 4000x3000 one (too big to mutate
/// quickly), plus two dev photos.
fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(data().join("edge/files"))
        .expect("edge files")
        .map(|e| e.unwrap().path())
        .filter(|p| !p.to_string_lossy().contains("upscaled"))
        .collect();
    names.push(data().join("dev/images/dlib_pascal/2008_001009.jpg"));
    names.push(data().join("dev/images/dlib_pascal/2007_007763.jpg"));
    names.sort();
    names
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.file_name().unwrap().to_string_lossy().into_owned(), bytes)
        })
        .collect()
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

/// The property for one input; `Err` describes a violation.
fn check(bytes: &[u8]) -> Result<(), String> {
    let limits = DecodeLimits {
        max_pixels: MAX_PIXELS,
    };
    let started = Instant::now();
    let sniffed = guess_format(bytes).ok();
    let probed = probe(Cursor::new(bytes), &limits);
    let decoded = decode(bytes, &limits);
    let took = started.elapsed();
    if took > SLOW {
        return Err(format!("took {took:?} for {} bytes", bytes.len()));
    }
    for error in [probed.as_ref().err(), decoded.as_ref().err()]
        .into_iter()
        .flatten()
    {
        if !matches!(
            error,
            DetectError::InvalidImage(_) | DetectError::TooManyPixels { .. }
        ) {
            return Err(format!("unexpected error kind: {error:?}"));
        }
        if let DetectError::TooManyPixels {
            width,
            height,
            limit,
        } = error
        {
            if u64::from(*width) * u64::from(*height) <= *limit {
                return Err(format!("refused {width}x{height} under the limit {limit}"));
            }
        }
    }
    if let Ok(info) = &probed {
        let pixels = u64::from(info.width) * u64::from(info.height);
        if pixels == 0 || pixels > MAX_PIXELS {
            return Err(format!("probe passed {}x{}", info.width, info.height));
        }
        if sniffed != Some(info.format) {
            return Err(format!(
                "probe says {:?}, sniffing {sniffed:?}",
                info.format
            ));
        }
    }
    if let Ok(image) = &decoded {
        let (w, h) = image.dimensions();
        let pixels = u64::from(w) * u64::from(h);
        if pixels == 0 || pixels > MAX_PIXELS {
            return Err(format!("decoded {w}x{h}, limit {MAX_PIXELS}"));
        }
        if image.as_raw().len() as u64 != pixels * 3 {
            return Err(format!(
                "{w}x{h} image holds {} bytes",
                image.as_raw().len()
            ));
        }
        match &probed {
            Ok(info)
                if (info.width, info.height) == (w, h) || (info.height, info.width) == (w, h) => {}
            other => return Err(format!("decoded {w}x{h} but probe said {other:?}")),
        }
    }
    Ok(())
}

#[test]
fn seeds_hold_the_property_unmutated() {
    for (name, bytes) in seeds() {
        check(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// A case this finds failing becomes a test of its own here: its seed's name and
/// mutations, applied with `apply` and checked with `check`.
#[test]
fn mutated_files_never_panic_and_respect_the_pixel_limit() {
    let seeds = seeds();
    let count = seeds.len();
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    let started = Instant::now();
    let strategy = (0..count, prop::collection::vec(mutation(), 1..6));
    let result = runner.run(&strategy, |(seed, mutations)| {
        let (name, original) = &seeds[seed];
        let bytes = apply(original.clone(), &mutations);
        check(&bytes).map_err(|e| TestCaseError::fail(format!("{name}: {e}")))
    });
    eprintln!("{} cases in {:.1?}", cases(), started.elapsed());
    if let Err(error) = result {
        panic!("{error}");
    }
}
