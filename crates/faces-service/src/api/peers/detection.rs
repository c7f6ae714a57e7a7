//! What the peers' endpoints share: a place among the node's uploads, the photo read
//! into memory, and detection now, on the process's shared detector, holding memory
//! from the budget and a detection slot exactly as a worker does. Nothing is stored
//! and nothing is announced on the feed: the peers answer in the request and keep
//! nothing, and so do these endpoints.

use std::io::Cursor;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::multipart::MultipartError;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use faces_detect::{
    decode, guess_format, probe, DecodeLimits, DetectError, Embedding, Face, FaceRect, RgbImage,
};
use tokio::sync::OwnedSemaphorePermit;

use crate::client_address::InProgress;
use crate::error::messages;
use crate::state::AppState;

/// How long a request waits for memory and a detection slot before the node answers
/// that it is busy: the peers' clients give up after 10 s or so.
const SLOT_WITHIN: Duration = Duration::from_secs(5);
/// A form value (an API key, a threshold) is cut at this length.
const MAX_VALUE_BYTES: usize = 4096;

/// Why a photo was not detected; each peer answers it in its own shape.
#[derive(Debug)]
pub enum Refusal {
    /// Empty, or not an image the decoder reads.
    InvalidImage,
    /// Over the byte limit, the pixel limit or the whole memory budget: the sentence says which.
    TooLarge(String),
    /// The body could not be read (broken multipart, a stalled upload): the sentence says why.
    Unreadable(StatusCode, String),
    /// The node is at its limits: too many requests at once, or no memory or
    /// detection slot within [`SLOT_WITHIN`].
    Busy(String),
    /// A failure of ours, logged where it happened.
    Failed,
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::InvalidImage => StatusCode::BAD_REQUEST,
            Refusal::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::Unreadable(status, _) => *status,
            Refusal::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::Failed => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// This service's sentence for it (a peer may use its own for [`Refusal::InvalidImage`]).
    pub fn message(&self) -> &str {
        match self {
            Refusal::InvalidImage => messages::INVALID_IMAGE,
            Refusal::TooLarge(message)
            | Refusal::Unreadable(_, message)
            | Refusal::Busy(message) => message,
            Refusal::Failed => "The server could not complete the request. Please try again.",
        }
    }

    /// Seconds for `Retry-After`, on the answers that ask the client to come back.
    pub fn retry_after(&self) -> Option<u64> {
        matches!(self, Refusal::Busy(_)).then_some(1)
    }
}

/// A request's place among the uploads this node takes at once (and those of its
/// client address): held until it is answered.
pub struct Slot<'a> {
    _address: Option<InProgress<'a>>,
    _upload: OwnedSemaphorePermit,
}

/// Takes a place for `request`, or refuses as busy: the caps of `POST /image/` apply.
pub fn enter<'a>(state: &'a AppState, request: &Request) -> Result<Slot<'a>, Refusal> {
    let address = match state.client_address.of(request) {
        Some(address) => Some(
            state
                .uploads_in_progress
                .start(address, state.config.max_concurrent_uploads_per_address)
                .ok_or_else(|| {
                    Refusal::Busy(
                        "Too many requests from your address at once. Wait for one to finish."
                            .into(),
                    )
                })?,
        ),
        None => None,
    };
    let upload = state.uploads.clone().try_acquire_owned().map_err(|_| {
        Refusal::Busy(
            "The server is receiving too many photos right now. Please try again shortly.".into(),
        )
    })?;
    Ok(Slot {
        _address: address,
        _upload: upload,
    })
}

/// A multipart form read into memory: the file parts asked for, and the plain values.
#[derive(Debug, Default)]
pub struct Form {
    files: Vec<(String, Bytes)>,
    values: Vec<(String, String)>,
}

impl Form {
    /// The file part `name`, if the form had one.
    pub fn file(&self, name: &str) -> Option<Bytes> {
        self.files
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, bytes)| bytes.clone())
    }

    /// The first value of field `name`.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value.as_str())
    }
}

/// The media type of the request, lower-cased, without parameters (`""` if none).
pub fn media_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// The request's multipart body, its parts' headers guarded; `None` if it is not
/// multipart (no boundary) or cannot be read as such: the peers then answer as for
/// a missing image.
async fn multipart(request: Request) -> Option<Multipart> {
    let full_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let boundary = super::super::part_headers::boundary(&full_type)?;
    let (parts, body) = request.into_parts();
    let request = Request::from_parts(parts, super::super::part_headers::guard(body, &boundary));
    Multipart::from_request(request, &()).await.ok()
}

/// Reads a `multipart/form-data` body: the first part named each of `file_fields`
/// (a file or not, whatever its name and content type: the format is told from the
/// bytes) up to `limit` bytes each, and the other parts as values. `Ok` with no file
/// if the body is not multipart at all.
pub async fn read_multipart(
    request: Request,
    file_fields: &[&str],
    limit: u64,
) -> Result<Form, Refusal> {
    let Some(mut multipart) = multipart(request).await else {
        return Ok(Form::default());
    };
    let malformed = |error: MultipartError| unreadable(error, limit);
    let mut form = Form::default();
    loop {
        let mut field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            // No part at all (an empty body, as some clients send an empty form):
            // a form without the file, not a broken upload.
            Err(error) if form.files.is_empty() && form.values.is_empty() => match malformed(error)
            {
                Refusal::Unreadable(StatusCode::BAD_REQUEST, _) => break,
                refusal => return Err(refusal),
            },
            Err(error) => return Err(malformed(error)),
        };
        let name = field.name().unwrap_or_default().to_owned();
        if file_fields.contains(&name.as_str()) && form.file(&name).is_none() {
            let mut bytes = BytesMut::new();
            while let Some(chunk) = field.chunk().await.map_err(malformed)? {
                if (bytes.len() + chunk.len()) as u64 > limit {
                    return Err(Refusal::TooLarge(messages::too_large(limit)));
                }
                bytes.extend_from_slice(&chunk);
            }
            form.files.push((name, bytes.freeze()));
        } else if field.file_name().is_none() {
            let mut value = Vec::new();
            while let Some(chunk) = field.chunk().await.map_err(malformed)? {
                let room = MAX_VALUE_BYTES.saturating_sub(value.len());
                value.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            form.values
                .push((name, String::from_utf8_lossy(&value).into_owned()));
        }
        // Other files are skipped: the parser drains them on the next field.
    }
    Ok(form)
}

/// A form's file parts, in order, and its plain values.
#[derive(Debug, Default)]
pub struct Files {
    pub files: Vec<Bytes>,
    values: Vec<(String, String)>,
}

impl Files {
    /// The first value of field `name`.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Whether a part is one of DeepStack's images: any part with a file name (DeepStack
/// takes every file of the form), or one named `image` or `image<N>` without
/// (CodeProject.AI documents `imageN`).
fn is_image_part(name: &str, file_name: Option<&str>) -> bool {
    file_name.is_some()
        || name
            .strip_prefix("image")
            .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
}

/// Reads a form in either encoding: `multipart/form-data` (its image parts, see
/// [`is_image_part`], `limit` bytes in all) or `application/x-www-form-urlencoded`
/// (values only). Any other body is an empty form.
pub async fn read_form(request: Request, limit: u64) -> Result<Files, Refusal> {
    if media_type(request.headers()) == "application/x-www-form-urlencoded" {
        let body = axum::body::to_bytes(request.into_body(), MAX_VALUE_BYTES * 4)
            .await
            .map_err(|_| Refusal::TooLarge(messages::too_large(MAX_VALUE_BYTES as u64 * 4)))?;
        return Ok(Files {
            files: Vec::new(),
            values: form_urlencoded::parse(&body).into_owned().collect(),
        });
    }
    let Some(mut multipart) = multipart(request).await else {
        return Ok(Files::default());
    };
    let malformed = |error: MultipartError| unreadable(error, limit);
    let mut form = Files::default();
    let mut total = 0u64;
    loop {
        let mut field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(error) if form.files.is_empty() && form.values.is_empty() => {
                match malformed(error) {
                    Refusal::Unreadable(StatusCode::BAD_REQUEST, _) => break,
                    refusal => return Err(refusal),
                }
            }
            Err(error) => return Err(malformed(error)),
        };
        let name = field.name().unwrap_or_default().to_owned();
        if is_image_part(&name, field.file_name()) {
            let mut bytes = BytesMut::new();
            while let Some(chunk) = field.chunk().await.map_err(malformed)? {
                total += chunk.len() as u64;
                if total > limit {
                    return Err(Refusal::TooLarge(messages::too_large(limit)));
                }
                bytes.extend_from_slice(&chunk);
            }
            form.files.push(bytes.freeze());
        } else {
            let mut value = Vec::new();
            while let Some(chunk) = field.chunk().await.map_err(malformed)? {
                let room = MAX_VALUE_BYTES.saturating_sub(value.len());
                value.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            form.values
                .push((name, String::from_utf8_lossy(&value).into_owned()));
        }
    }
    Ok(form)
}

/// Why a multipart body could not be read.
fn unreadable(error: MultipartError, limit: u64) -> Refusal {
    if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return Refusal::TooLarge(messages::too_large(limit));
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(cause) = source {
        if cause.is::<tower_http::timeout::TimeoutError>() {
            return Refusal::Unreadable(
                StatusCode::REQUEST_TIMEOUT,
                "The upload stalled and was given up on. Please try again.".into(),
            );
        }
        source = cause.source();
    }
    let reason = if super::super::part_headers::is_too_long(&error) {
        super::super::part_headers::PartHeadersTooLong.to_string()
    } else {
        error.body_text()
    };
    Refusal::Unreadable(
        StatusCode::BAD_REQUEST,
        format!("The upload could not be read: {reason}."),
    )
}

/// What one detection found, and how long it took.
#[derive(Debug)]
pub struct Found {
    /// The upright image's size (EXIF orientation applied), which the boxes lie in.
    pub width: u32,
    pub height: u32,
    /// Best first, at most `--max-faces`.
    pub faces: Vec<Face>,
    /// One per face, in the same order, when asked for; else empty.
    pub embeddings: Vec<Embedding>,
    /// The network's share.
    pub inference: Duration,
    /// The embeddings' share (zero without them).
    pub embedding: Duration,
    /// Decoding, detection and embeddings together.
    pub process: Duration,
}

/// Detects the faces in `bytes` at `threshold` (on this service's scale) in the
/// server's mode, now, and with `embed` computes each one's embedding: see
/// [`with_image`] for what it holds meanwhile.
pub async fn detect(
    state: &Arc<AppState>,
    bytes: Bytes,
    threshold: f32,
    embed: bool,
) -> Result<Found, Refusal> {
    let Some(detector) = state.detector().await else {
        return Err(Refusal::Failed);
    };
    let recognizer = match embed {
        true => Some(state.recognizer().await.ok_or(Refusal::Failed)?),
        false => None,
    };
    let (mode, max_faces, metrics) = (
        state.config.detector_mode,
        state.config.max_faces,
        state.metrics.clone(),
    );
    with_image(state, bytes, move |image, started| {
        let detecting = Instant::now();
        let mut faces = detector
            .detect_with(image, mode, threshold)
            .map_err(|error| {
                tracing::error!(%error, "detection failed");
                Refusal::Failed
            })?;
        let inference = detecting.elapsed();
        metrics.detection_seconds(inference);
        faces.sort_by(|a, b| b.score.total_cmp(&a.score));
        faces.truncate(max_faces.max(1));
        let embedding = Instant::now();
        let embeddings = match recognizer {
            Some(recognizer) if !faces.is_empty() => {
                let rects: Vec<FaceRect> = faces.iter().map(FaceRect::of).collect();
                recognizer.embed(image, &rects)
            }
            _ => Vec::new(),
        };
        let embedding = embedding.elapsed();
        Ok(Found {
            width: image.width(),
            height: image.height(),
            faces,
            embeddings,
            inference,
            embedding,
            process: started.elapsed(),
        })
    })
    .await
}

/// The whole photo `bytes` as one face, for photos that are a face already
/// (CompreFace's `detect_faces=false`): its box is the image, its score 1, and its
/// embedding. Nothing locates its landmarks: they are all the centre, and the
/// callers never answer them.
pub async fn whole(state: &Arc<AppState>, bytes: Bytes) -> Result<Found, Refusal> {
    let recognizer = state.recognizer().await.ok_or(Refusal::Failed)?;
    with_image(state, bytes, move |image, started| {
        let (width, height) = (image.width() as f32, image.height() as f32);
        let face = Face {
            x: 0.0,
            y: 0.0,
            width,
            height,
            score: 1.0,
            landmarks: [[width / 2.0, height / 2.0]; 5],
        };
        let embedding = Instant::now();
        let embeddings = recognizer.embed(image, &[FaceRect::of(&face)]);
        let embedding = embedding.elapsed();
        Ok(Found {
            width: image.width(),
            height: image.height(),
            faces: vec![face],
            embeddings,
            inference: Duration::ZERO,
            embedding,
            process: started.elapsed(),
        })
    })
    .await
}

/// The embeddings of the faces at `rects` in the photo `bytes` (a stored original,
/// for a face processed while recognition was off), computed now.
pub async fn embed(
    state: &Arc<AppState>,
    bytes: Bytes,
    rects: Vec<FaceRect>,
) -> Result<Vec<Embedding>, Refusal> {
    let recognizer = state.recognizer().await.ok_or(Refusal::Failed)?;
    with_image(state, bytes, move |image, _| {
        Ok(recognizer.embed(image, &rects))
    })
    .await
}

/// Decodes `bytes` upright and runs `work` on the image on a blocking thread, now:
/// memory for the photo from the budget and one detection slot
/// (`--max-concurrent-decodes`), as a worker holds them, waiting at most
/// [`SLOT_WITHIN`] for them. `work` is given when decoding started.
async fn with_image<T: Send + 'static>(
    state: &Arc<AppState>,
    bytes: Bytes,
    work: impl FnOnce(&RgbImage, Instant) -> Result<T, Refusal> + Send + 'static,
) -> Result<T, Refusal> {
    if bytes.is_empty() || guess_format(&bytes).is_err() {
        return Err(Refusal::InvalidImage);
    }
    let limits = DecodeLimits {
        max_pixels: state.config.max_pixels,
    };
    let info = match probe(Cursor::new(&bytes[..]), &limits) {
        Ok(info) => info,
        Err(DetectError::TooManyPixels {
            width,
            height,
            limit,
        }) => {
            return Err(Refusal::TooLarge(messages::too_many_pixels(
                width, height, limit,
            )))
        }
        Err(_) => return Err(Refusal::InvalidImage),
    };
    let cost = crate::budget::photo_cost(
        bytes.len() as u64,
        info.width,
        info.height,
        info.decode_bytes,
        // Nothing is marked or stored: the decode or the pixels are the peak.
        faces_detect::Mark::None,
    );
    if !state.budget.admits(cost) {
        return Err(Refusal::TooLarge(format!(
            "Decoding this image needs {} of memory; the memory budget is {}.",
            crate::budget::mib(cost),
            crate::budget::mib(state.budget.bytes())
        )));
    }
    let busy = || {
        Refusal::Busy("The server is busy detecting other photos. Please try again shortly.".into())
    };
    let deadline = tokio::time::Instant::now() + SLOT_WITHIN;
    // Budget first, then the slot: the order the workers take them in.
    let reserved = tokio::time::timeout_at(deadline, state.budget.reserve(cost))
        .await
        .map_err(|_| busy())?;
    let slot = tokio::time::timeout_at(deadline, state.decodes.clone().acquire_owned())
        .await
        .map_err(|_| busy())?
        .map_err(|_| Refusal::Failed)?;
    let done = tokio::task::spawn_blocking(move || {
        let _held = (reserved, slot);
        let started = Instant::now();
        let image = decode(&bytes, &limits).map_err(|error| match error {
            DetectError::TooManyPixels {
                width,
                height,
                limit,
            } => Refusal::TooLarge(messages::too_many_pixels(width, height, limit)),
            _ => Refusal::InvalidImage,
        })?;
        work(&image, started)
    })
    .await;
    done.map_err(|error| {
        tracing::error!(%error, "the detection task failed");
        Refusal::Failed
    })?
}

/// A face's box in whole pixels, inside a `width` x `height` image: `0 <= x_min <
/// x_max <= width`, and the same for `y`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PixelBox {
    pub x_min: u32,
    pub y_min: u32,
    pub x_max: u32,
    pub y_max: u32,
}

impl PixelBox {
    /// `face`'s box rounded to whole pixels and clamped inside the image (a face cut
    /// by the border keeps the part inside; at least one pixel wide and high).
    pub fn of(face: &Face, width: u32, height: u32) -> PixelBox {
        let (x_min, x_max) = span(face.x, face.x + face.width, width);
        let (y_min, y_max) = span(face.y, face.y + face.height, height);
        PixelBox {
            x_min,
            y_min,
            x_max,
            y_max,
        }
    }
}

/// `[start, end)` rounded and clamped to `[0, size]`, at least one pixel long.
fn span(start: f32, end: f32, size: u32) -> (u32, u32) {
    let size = size.max(1);
    let clamp = |v: f32| (v.round().max(0.0) as u64).min(u64::from(size)) as u32;
    let start = clamp(start).min(size - 1);
    let end = clamp(end).max(start + 1);
    (start, end)
}

/// A peer's error `body` with `status`, `Retry-After` where given, and
/// `Connection: close` where the request's body may not have been read whole.
pub fn error_response(
    status: StatusCode,
    retry_after: Option<u64>,
    body: impl IntoResponse,
) -> Response {
    let mut response = (status, body).into_response();
    if let Some(seconds) = retry_after.and_then(|s| HeaderValue::from_str(&s.to_string()).ok()) {
        response.headers_mut().insert(header::RETRY_AFTER, seconds);
    }
    if matches!(
        status,
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::SERVICE_UNAVAILABLE
    ) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// A landmark `[x, y]` in whole pixels inside the image.
pub fn pixel_point([x, y]: [f32; 2], width: u32, height: u32) -> [u32; 2] {
    let clamp =
        |v: f32, size: u32| (v.round().max(0.0) as u64).min(u64::from(size.max(1) - 1)) as u32;
    [clamp(x, width), clamp(y, height)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(x: f32, y: f32, width: f32, height: f32) -> Face {
        Face {
            x,
            y,
            width,
            height,
            score: 0.9,
            landmarks: [[0.0; 2]; 5],
        }
    }

    #[test]
    fn boxes_are_whole_pixels_inside_the_image() {
        let inside = PixelBox::of(&face(10.4, 20.6, 30.0, 40.0), 100, 100);
        assert_eq!(
            inside,
            PixelBox {
                x_min: 10,
                y_min: 21,
                x_max: 40,
                y_max: 61
            }
        );
        // Cut by the top left and the bottom right corners.
        let over = PixelBox::of(&face(-12.0, -3.0, 130.0, 140.0), 100, 80);
        assert_eq!(
            (over.x_min, over.y_min, over.x_max, over.y_max),
            (0, 0, 100, 80)
        );
        // Wholly outside (cannot come from the detector, but must not underflow).
        let outside = PixelBox::of(&face(150.0, 90.0, 10.0, 10.0), 100, 80);
        assert_eq!((outside.x_min, outside.x_max), (99, 100));
        assert_eq!((outside.y_min, outside.y_max), (79, 80));
        assert_eq!(pixel_point([-1.0, 200.4], 100, 80), [0, 79]);
    }
}
