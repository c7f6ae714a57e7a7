//! Turning untrusted bytes into an upright RGB image, refusing bombs before decoding.

use std::io::{BufRead, Cursor, Seek};

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbImage};

use crate::DetectError;

/// Limits applied before any pixel is decoded.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// Largest width x height accepted (default 100 megapixels).
    pub max_pixels: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_pixels: 100_000_000,
        }
    }
}

/// What the header says, read without decoding the pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageInfo {
    pub format: ImageFormat,
    /// Stored size, before EXIF orientation.
    pub width: u32,
    pub height: u32,
    /// Bytes [`decode`] holds at its peak for this image, see [`decode_bytes`].
    pub decode_bytes: u64,
}

/// Bytes [`decode`] holds at once for a `width` x `height` image stored as `color`:
/// the decoder's buffer, plus the larger of a rotated copy (EXIF orientations that
/// turn the image by 90 degrees are not done in place) and the 8-bit RGB copy (any
/// other colour type). A 16-bit RGBA photo costs 8 + 3 bytes a pixel, an RGB JPEG 3.
pub fn decode_bytes(
    width: u32,
    height: u32,
    color: image::ColorType,
    orientation: image::metadata::Orientation,
) -> u64 {
    use image::metadata::Orientation::*;
    let pixels = u64::from(width) * u64::from(height);
    let stored = pixels * u64::from(color.bytes_per_pixel());
    let rotated = match orientation {
        Rotate90 | Rotate270 | Rotate90FlipH | Rotate270FlipH => stored,
        NoTransforms | Rotate180 | FlipHorizontal | FlipVertical => 0,
    };
    let rgb = if color == image::ColorType::Rgb8 {
        0
    } else {
        pixels * 3
    };
    stored + rotated.max(rgb)
}

fn reader<R: BufRead + Seek>(
    source: R,
    limits: &DecodeLimits,
) -> Result<ImageReader<R>, DetectError> {
    let mut reader = ImageReader::new(source)
        .with_guessed_format()
        .map_err(|e| DetectError::InvalidImage(e.to_string()))?;
    if reader.format().is_none() {
        return Err(DetectError::InvalidImage("unknown image format".into()));
    }
    // Decoders allocate for the declared size: cap it by the pixel limit (RGBA16 worst case).
    let mut image_limits = Limits::default();
    image_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8).max(64 << 20));
    reader.limits(image_limits);
    Ok(reader)
}

/// Reads the format and stored size from the header and checks the pixel limit.
/// The bytes are sniffed: the file name plays no part. Only the header is read,
/// so a file on disk can be checked without loading it (`BufReader<File>`).
pub fn probe<R: BufRead + Seek>(
    source: R,
    limits: &DecodeLimits,
) -> Result<ImageInfo, DetectError> {
    let reader = reader(source, limits)?;
    let format = reader
        .format()
        .ok_or_else(|| DetectError::InvalidImage("unknown image format".into()))?;
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| DetectError::InvalidImage(e.to_string()))?;
    let (width, height) = decoder.dimensions();
    check_pixels(width, height, limits)?;
    // As `decode` reads it: a broken EXIF block means upright.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    Ok(ImageInfo {
        format,
        width,
        height,
        decode_bytes: decode_bytes(width, height, decoder.color_type(), orientation),
    })
}

fn check_pixels(width: u32, height: u32, limits: &DecodeLimits) -> Result<(), DetectError> {
    if width == 0 || height == 0 {
        return Err(DetectError::InvalidImage("image has no pixels".into()));
    }
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(DetectError::TooManyPixels {
            width,
            height,
            limit: limits.max_pixels,
        });
    }
    Ok(())
}

/// Decodes any supported format (the first frame of an animation) into upright
/// 8-bit RGB: EXIF orientation applied; grayscale, 16-bit, palette, alpha and CMYK converted.
pub fn decode(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage, DetectError> {
    let invalid = |e: image::ImageError| DetectError::InvalidImage(e.to_string());
    let mut decoder = reader(Cursor::new(bytes), limits)?
        .into_decoder()
        .map_err(invalid)?;
    let (width, height) = decoder.dimensions();
    check_pixels(width, height, limits)?;
    // A broken EXIF block should not cost the user the picture: treat it as upright.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(invalid)?;
    image.apply_orientation(orientation);
    Ok(match image {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.to_rgb8(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(image: DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut bytes = Cursor::new(Vec::new());
        image.write_to(&mut bytes, format).unwrap();
        bytes.into_inner()
    }

    #[test]
    fn probe_tells_the_decode_cost_of_the_stored_colour_type() {
        let limits = DecodeLimits::default();
        let rgba16 = DynamicImage::ImageRgba16(image::ImageBuffer::new(30, 20));
        let info = probe(Cursor::new(encoded(rgba16, ImageFormat::Png)), &limits).unwrap();
        assert_eq!(info.decode_bytes, 30 * 20 * (8 + 3));
        let rgb8 = DynamicImage::ImageRgb8(RgbImage::new(30, 20));
        let info = probe(Cursor::new(encoded(rgb8, ImageFormat::Jpeg)), &limits).unwrap();
        assert_eq!(info.decode_bytes, 30 * 20 * 3);
        let gray = DynamicImage::ImageLuma8(image::GrayImage::new(30, 20));
        let info = probe(Cursor::new(encoded(gray, ImageFormat::Png)), &limits).unwrap();
        assert_eq!(info.decode_bytes, 30 * 20 * (1 + 3));
    }

    #[test]
    fn a_quarter_turn_costs_a_copy() {
        use image::metadata::Orientation;
        let color = image::ColorType::Rgb8;
        let upright = decode_bytes(10, 10, color, Orientation::NoTransforms);
        assert_eq!(
            decode_bytes(10, 10, color, Orientation::Rotate90),
            2 * upright
        );
        assert_eq!(decode_bytes(10, 10, color, Orientation::Rotate180), upright);
    }
}
