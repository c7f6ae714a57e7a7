//! Face detection in pure Rust: RetinaFace (MobileNet-0.25), with the model's weights
//! built into the binary, run by the native engine (this network written out over
//! AVX2 kernels) or, on CPUs without AVX2/FMA, the `rten` ONNX engine.
//!
//! Bytes in, faces and a marked image out; no HTTP, no database. The service and
//! the `faces detect` command both use this crate.
//!
//! ```no_run
//! use faces_detect::{decode, draw_faces, encode_jpeg, DecodeLimits, Detector, DetectorConfig};
//!
//! let bytes = std::fs::read("group.jpg").unwrap();
//! let image = decode(&bytes, &DecodeLimits::default()).unwrap();
//! let detector = Detector::new(DetectorConfig::default()).unwrap();
//! let faces = detector.detect(&image).unwrap();
//! println!("{} faces", faces.len());
//! let marked = draw_faces(&image, &faces);
//! std::fs::write("marked.jpg", encode_jpeg(&marked).unwrap()).unwrap();
//! ```

// `unsafe` lives in the native engine's kernel module only (allowed there, each
// block with the invariant it relies on).
#![deny(unsafe_code)]

mod anchors;
mod decode;
mod detector;
mod draw;
mod engine;
mod error;
mod geometry;
mod mark;
mod model;
mod recognition;

pub use decode::{decode, decode_bytes, probe, DecodeLimits, ImageInfo};
pub use detector::{Detector, DetectorConfig, Engine, Mode};
pub use draw::{box_thickness, draw_faces, encode_jpeg, encode_jpeg_reference, mark_faces};
pub use engine::native::fma_peak_gflops;
pub use engine::profile::{LayerKind, LayerTime};
pub use error::DetectError;
pub use geometry::{Face, Suppression};
pub use image::{guess_format, ImageFormat, RgbImage};
pub use mark::{apply_mark, region, Mark, Region, REGION_SCALE};
pub use recognition::{distances, Embedding, FaceRect, Recognition, Recognizer, EMBEDDING_LEN};
