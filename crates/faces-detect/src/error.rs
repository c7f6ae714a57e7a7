use thiserror::Error;

/// Everything that can go wrong between bytes and faces.
#[derive(Debug, Error)]
pub enum DetectError {
    /// The bytes are not an image this crate can decode (unknown format, corrupt or truncated data).
    #[error("not a valid image: {0}")]
    InvalidImage(String),
    /// The header declares more pixels than allowed; nothing was decoded.
    #[error("image is {width}x{height} pixels, over the limit of {limit} pixels")]
    TooManyPixels { width: u32, height: u32, limit: u64 },
    /// The model failed to run (should not happen with the bundled model).
    #[error("model inference failed: {0}")]
    Inference(String),
    /// The marked copy could not be encoded.
    #[error("could not encode JPEG: {0}")]
    Encode(String),
}
