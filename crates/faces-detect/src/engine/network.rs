//! The one interface every engine implements.

use image::RgbImage;

use super::profile::LayerTime;
use crate::DetectError;

/// RetinaFace on one engine: an image in, the network's raw outputs out. Shared
/// by every thread that detects at once.
pub(crate) trait Network: Send + Sync {
    /// One pass over `image` (any size; the engine pads it, see
    /// [`crate::model::padded_size`]): box offsets, class scores and landmark
    /// offsets, each flattened over the anchors [`crate::anchors::decode`] reads.
    fn infer(&self, image: &RgbImage) -> Result<[Vec<f32>; 3], DetectError>;

    /// The pass with each layer kind timed, where the engine can tell (the native one).
    fn profile(&self, _image: &RgbImage) -> Result<Option<Vec<LayerTime>>, DetectError> {
        Ok(None)
    }
}
