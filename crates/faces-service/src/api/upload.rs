//! `POST /image/`: stream the file to disk while hashing it, validate it (the
//! checks in the order [`validate`] gives, which decides the error a bad file
//! gets), store it, and queue its job, all before answering 202 (or, with
//! `?wait=N`, 200 with the result once it is ready within N seconds). docs/api.md
//! describes every answer.
//! A rejected upload leaves nothing behind.

use std::io::{BufReader, Cursor, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use chrono::Utc;
use faces_detect::{guess_format, probe, DecodeLimits, DetectError, ImageFormat};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::broadcast;
use utoipa::ToSchema;
use uuid::Uuid;

use super::images::SubmissionView;
use super::png_structure::{PngStructure, Verdict};
use super::request_options::{Requested, MAX_FIELD_BYTES, OPTION_FIELDS};
use crate::error::{messages, ApiError, Fault};
use crate::names::Names;
use crate::state::AppState;
use crate::store::original_key;
use crate::submission::{Status, Submission};

/// Field names that carry the file: `image`, the documented one, and `file`, which
/// some existing clients send instead.
const FILE_FIELDS: [&str; 2] = ["image", "file"];
/// Bytes read to check an image's header (metadata segments included).
const HEADER_PREFIX: u64 = 4 * 1024 * 1024;

/// The 202 answer: the photo is stored and queued. Its fields come in this order.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    #[schema(example = "Request accepted. Starting image processing.")]
    message: &'static str,
    /// The live feed's WebSocket URL.
    #[schema(example = "ws://localhost:8282/faces")]
    feed_url: String,
    id: Uuid,
    /// Where to read this submission's status and result.
    #[schema(example = "http://localhost:8282/image/7246f927-94a4-4225-9a56-b52bab894ad0")]
    status_url: String,
}

/// A file on disk that is removed when dropped, unless it was moved away first.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A streamed upload, not yet validated.
struct Received {
    temp: TempFile,
    file_name: String,
    size: u64,
    sha256: String,
    png: Verdict,
    /// `mode`, `threshold` and `mark` form fields (the page's), before or after the file.
    options: Requested,
}

/// Submit a photo (also at `POST /image`).
///
/// It is stored and queued before the answer; the result comes on the feed and at
/// `status_url`. A browser's plain form post (`Accept: text/html`) gets a redirect
/// to `/` or an HTML error page instead.
#[utoipa::path(
    post,
    path = "/image/",
    tag = "images",
    request_body(content = crate::api::schema::UploadForm, content_type = "multipart/form-data"),
    params(
        ("wait" = Option<u64>, Query, minimum = 0, maximum = 60,
            description = "Seconds to wait for the result: `200` with it if the photo is done or failed by then, else the `202`"),
        ("mode" = Option<String>, Query, description = "`fast` or `accurate` for this photo (default: the server's `--detector-mode`)"),
        ("threshold" = Option<f64>, Query, minimum = 0, maximum = 1,
            description = "Minimum face score for this photo (default: the server's `--score-threshold`)"),
        ("mark" = Option<String>, Query,
            description = "What the processed copy does to each face: `box`, `blur` or `pixelate` (an ellipse 1.4x the box made unrecognisable), or `none` (default: the server's `--mark`)"),
    ),
    responses(
        (status = 200, description = "With `wait`: the photo was done or failed in time", body = Answered),
        (status = 202, description = "Accepted and queued", body = Accepted),
        (status = 400, description = "No file, an empty file, not a file, not a valid image, an extension not allowed, or too many pixels (keyed `image`); a bad `wait`, `mode`, `threshold` or `mark` (keyed by its name)", body = crate::api::schema::ErrorBody),
        (status = 401, description = "API keys are configured and none valid was given", body = crate::api::schema::ErrorBody),
        (status = 413, description = "Over the byte limit, or decoding it would need more than the whole memory budget", body = crate::api::schema::ErrorBody),
        (status = 415, description = "Not multipart/form-data", body = crate::api::schema::ErrorBody),
        (status = 429, description = "Too many uploads from this address", body = crate::api::schema::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 503, description = "This node is receiving too many uploads at once, or the database or storage is busy or unreachable", body = crate::api::schema::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        (status = 507, description = "No space left to store the upload", body = crate::api::schema::ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ),
    security((), ("bearer" = []))
)]
pub async fn upload(State(state): State<Arc<AppState>>, request: Request) -> Response {
    let html = wants_html(request.headers());
    let result = match Requested::from_query(request.uri().query()) {
        Ok(requested) => {
            // Subscribed before the job exists, so its finish cannot be missed.
            let finished = (requested.wait > 0 && !html).then(|| state.finished.subscribe());
            match receive_upload(&state, request, requested).await {
                Ok(accepted) => Ok((accepted, finished, requested.wait)),
                Err(Refused::Response(response)) => return response,
                Err(Refused::Error(error)) => Err(error),
            }
        }
        Err(error) => Err(error),
    };
    match result {
        // A form posted without JavaScript gets pages, not JSON.
        Ok(_) if html => Redirect::to("/").into_response(),
        Ok((accepted, Some(finished), wait)) => {
            // The upload's slots are given back already: waiting holds no worker,
            // no upload slot and no database connection.
            match wait_for_result(&state, finished, accepted.id, wait).await {
                Some(view) => Json(Answered {
                    view,
                    message: RESULT_MESSAGE,
                    feed_url: accepted.feed_url,
                    status_url: accepted.status_url,
                })
                .into_response(),
                None => (StatusCode::ACCEPTED, Json(accepted)).into_response(),
            }
        }
        Ok((accepted, None, _)) => (StatusCode::ACCEPTED, Json(accepted)).into_response(),
        Err(error) => {
            tracing::info!(status = error.status.as_u16(), reason = %error.message, "upload rejected");
            let mut response = if html {
                super::page::upload_error_page(error.status, &error.message)
            } else {
                error.into_response()
            };
            // A refusal may come before the body was read; the server then closes the
            // connection, so say so rather than let a client reuse it and fail.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
    }
}

/// Why an upload was not accepted: a ready answer (a limit's), or an error to show.
enum Refused {
    Response(Response),
    Error(ApiError),
}

/// Admits, streams, validates, stores and queues one upload.
async fn receive_upload(
    state: &Arc<AppState>,
    request: Request,
    requested: Requested,
) -> Result<Accepted, Refused> {
    // Held until accepted: bounds the temp files and sockets uploads tie up, per
    // client address first, so that a few slow clients cannot take them all.
    let _from_address = match state.client_address.of(&request) {
        Some(address) => match state
            .uploads_in_progress
            .start(address, state.config.max_concurrent_uploads_per_address)
        {
            Some(counted) => Some(counted),
            None => {
                return Err(Refused::Response(
                    super::limits::too_many_uploads_from_address(),
                ))
            }
        },
        None => None,
    };
    let Ok(_streaming) = state.uploads.clone().try_acquire_owned() else {
        return Err(Refused::Response(super::limits::too_many_uploads()));
    };
    state
        .admission
        .check(&state.db)
        .await
        .map_err(Refused::Error)?;
    accept(state, request, requested)
        .await
        .map_err(Refused::Error)
}

const RESULT_MESSAGE: &str = "Image processed.";

/// The `200` answer of `?wait=N`: the submission as `GET /image/<id>` shows it,
/// with the 202's links.
#[derive(Debug, Serialize, ToSchema)]
pub struct Answered {
    #[serde(flatten)]
    view: SubmissionView,
    #[schema(example = "Image processed.")]
    message: &'static str,
    feed_url: String,
    status_url: String,
}

/// Waits up to `wait` seconds for submission `id` to finish (done or failed).
/// `None` if it did not in time.
async fn wait_for_result(
    state: &AppState,
    mut finished: broadcast::Receiver<Uuid>,
    id: Uuid,
    wait: u64,
) -> Option<SubmissionView> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    loop {
        match tokio::time::timeout_at(deadline, finished.recv()).await {
            Ok(Ok(done)) if done == id => break,
            Ok(Ok(_)) => {}
            // Fell behind a burst of finishes: the database knows whether it is done.
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => {
                let submission = state.db.submission(id).await.ok().flatten()?;
                if matches!(submission.status, Status::Done | Status::Failed) {
                    break;
                }
            }
            Ok(Err(broadcast::error::RecvError::Closed)) | Err(_) => return None,
        }
    }
    let submission = state.db.submission(id).await.ok().flatten()?;
    let names = Names::read(state, &[&submission]).await.ok()?;
    let faces = names.faces(&submission);
    Some(SubmissionView::new(
        submission,
        faces,
        state.config.public_url(),
    ))
}

/// True for a browser's plain form post: it asks for HTML and not for JSON.
fn wants_html(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    accept.contains("text/html") && !accept.contains("application/json")
}

async fn accept(
    state: &Arc<AppState>,
    request: Request,
    mut requested: Requested,
) -> Result<Accepted, ApiError> {
    let limit = state.config.max_upload_bytes;
    check_headers(request.headers(), limit)?;
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .split(';')
        .next()
        .unwrap_or_default()
        .to_owned();
    let request = match super::part_headers::boundary(&full_content_type(&request)) {
        Some(boundary) => {
            let (parts, body) = request.into_parts();
            Request::from_parts(parts, super::part_headers::guard(body, &boundary))
        }
        None => request,
    };
    let multipart = Multipart::from_request(request, &()).await.map_err(|_| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "image",
            format!("Unsupported media type “{content_type}”. Send the image as multipart/form-data in the field “image”."),
        )
    })?;
    let received = receive(state, multipart, limit).await?;
    requested.fill_from(received.options);
    let options = requested.options(
        state.config.detector_mode,
        state.config.score_threshold,
        state.config.mark,
    );
    if received.size == 0 {
        return Err(ApiError::image(messages::EMPTY));
    }
    let limits = DecodeLimits {
        max_pixels: state.config.max_pixels,
    };
    let (path, name, png) = (
        received.temp.0.clone(),
        received.file_name.clone(),
        received.png,
    );
    let (extension, width, height, decode_bytes) =
        tokio::task::spawn_blocking(move || validate(&path, &name, png, &limits))
            .await
            .map_err(ApiError::internal)??;
    let cost = crate::budget::photo_cost(received.size, width, height, decode_bytes, options.mark);
    if !state.budget.admits(cost) {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "image",
            format!(
                "Decoding this image needs {} of memory; the memory budget is {}.",
                crate::budget::mib(cost),
                crate::budget::mib(state.budget.bytes())
            ),
        ));
    }

    let id = Uuid::new_v4();
    let key = original_key(id, &extension);
    state
        .store
        .put_file(&key, &received.temp.0)
        .await
        .map_err(|error| ApiError::fault("image", Fault::of_store(&error), error))?;
    let submission = Submission {
        id,
        status: Status::Queued,
        created_at: Utc::now(),
        processed_at: None,
        original_key: key.clone(),
        processed_key: None,
        content_hash: received.sha256,
        byte_size: received.size as i64,
        width: Some(i64::from(width)),
        height: Some(i64::from(height)),
        faces: None,
        duplicate_of: None,
        error: None,
        attempts: 0,
        options,
        decode_bytes: Some(cost as i64),
    };
    // The 202 goes out only once both the original and the committed row are durable;
    // a refused insert takes its original with it (a crash in between leaves an
    // orphan that start-up and retention remove).
    if let Err(error) = state.db.insert_submission(&submission).await {
        let _ = state.store.delete(&key).await;
        return Err(ApiError::database("image", error));
    }
    state.metrics.upload(received.size);
    crate::notify::job_queued(state).await;
    tracing::info!(%id, bytes = received.size, width, height, "upload accepted");
    Ok(Accepted {
        message: "Request accepted. Starting image processing.",
        feed_url: state.config.feed_url(),
        id,
        status_url: format!("{}/image/{id}", state.config.public_url()),
    })
}

fn full_content_type(request: &Request) -> String {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Refuses a declared body far over the limit before reading any of it.
fn check_headers(headers: &HeaderMap, limit: u64) -> Result<(), ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // Multipart framing adds a little: allow 64 KiB of it.
    if declared.is_some_and(|length| length > limit + 64 * 1024) {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "image",
            messages::too_large(limit),
        ));
    }
    Ok(())
}

/// Streams the first file field to a temporary file, hashing as it goes.
async fn receive(
    state: &Arc<AppState>,
    mut multipart: Multipart,
    limit: u64,
) -> Result<Received, ApiError> {
    let malformed = |error: axum::extract::multipart::MultipartError| {
        if super::part_headers::is_too_long(&error) {
            ApiError::image(format!(
                "The upload could not be read: {}.",
                super::part_headers::PartHeadersTooLong
            ))
        } else if timed_out(&error) {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "image",
                "The upload stalled and was given up on. Please try again.",
            )
        } else if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "image",
                messages::too_large(limit),
            )
        } else {
            ApiError::image(format!(
                "The upload could not be read: {}.",
                error.body_text()
            ))
        }
    };
    let mut saw_plain_value = false;
    let mut options = Requested::default();
    let mut received: Option<Received> = None;
    while let Some(mut field) = multipart.next_field().await.map_err(malformed)? {
        let name = field.name().unwrap_or_default().to_owned();
        if OPTION_FIELDS.contains(&name.as_str()) && field.file_name().is_none() {
            let mut value = Vec::new();
            while let Some(chunk) = field.chunk().await.map_err(malformed)? {
                value.extend_from_slice(&chunk);
                if value.len() > MAX_FIELD_BYTES {
                    break;
                }
            }
            // A plain form post sends the page's empty controls: the defaults.
            let value = String::from_utf8_lossy(&value);
            if !value.trim().is_empty() {
                options.set(&name, &value)?;
            }
            continue;
        }
        if received.is_some() || !FILE_FIELDS.contains(&name.as_str()) {
            continue;
        }
        let Some(file_name) = field.file_name().map(str::to_owned) else {
            saw_plain_value = true;
            continue;
        };
        let temp = TempFile(state.upload_path());
        let no_room = |error: std::io::Error| ApiError::fault("image", Fault::of_io(&error), error);
        let mut file = tokio::fs::File::create(&temp.0).await.map_err(no_room)?;
        let mut hasher = Sha256::new();
        let mut png = PngStructure::default();
        let mut size = 0u64;
        while let Some(chunk) = field.chunk().await.map_err(malformed)? {
            size += chunk.len() as u64;
            if size > limit {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "image",
                    messages::too_large(limit),
                ));
            }
            hasher.update(&chunk);
            png.update(&chunk);
            file.write_all(&chunk).await.map_err(no_room)?;
        }
        file.flush().await.map_err(no_room)?;
        received = Some(Received {
            temp,
            file_name,
            size,
            sha256: hex::encode(hasher.finalize()),
            png: png.verdict(),
            options: Requested::default(),
        });
    }
    match received {
        Some(received) => Ok(Received {
            options,
            ..received
        }),
        None => Err(ApiError::image(if saw_plain_value {
            messages::NOT_A_FILE
        } else {
            messages::NO_FILE
        })),
    }
}

/// Whether the body stopped arriving for longer than the body timeout.
fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(error) = source {
        if error.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// Checks the streamed file in this order, the first that fails deciding the
/// answer: (1) an image at all (its first bytes those of an image format)? (2) extension
/// allowed (gif, jpg, jpeg, png)? (3) bytes of that extension's format, header
/// decodable (a PNG's chunks whole, as `png` found while streaming), within the
/// pixel limit? The first two and a bad format or header are a 400 keyed `image`,
/// too many pixels a 413. Returns the lower-cased extension to store under, the
/// image's width and height, and the bytes decoding it holds in memory.
fn validate(
    path: &Path,
    file_name: &str,
    png: Verdict,
    limits: &DecodeLimits,
) -> Result<(String, u32, u32, u64), ApiError> {
    let mut file = BufReader::new(std::fs::File::open(path).map_err(ApiError::internal)?);
    let mut head = Vec::with_capacity(64);
    (&mut file)
        .take(64)
        .read_to_end(&mut head)
        .map_err(ApiError::internal)?;
    let Ok(sniffed) = guess_format(&head) else {
        return Err(ApiError::image(messages::INVALID_IMAGE));
    };
    // The name is only read for its extension; it is never used as a path.
    let extension = file_name
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_lowercase())
        .unwrap_or_default();
    let expected = match extension.as_str() {
        "jpg" | "jpeg" => ImageFormat::Jpeg,
        "png" => ImageFormat::Png,
        "gif" => ImageFormat::Gif,
        _ => return Err(ApiError::image(messages::extension_not_allowed(&extension))),
    };
    if sniffed != expected || (expected == ImageFormat::Png && png != Verdict::Whole) {
        return Err(ApiError::image(messages::INVALID_IMAGE));
    }
    // Headers sit at the start; the JPEG decoder would read the whole input, so give it
    // a bounded prefix: a 100 MB upload is checked in a few MB of memory.
    file.seek(SeekFrom::Start(0)).map_err(ApiError::internal)?;
    let mut prefix = Vec::new();
    file.take(HEADER_PREFIX)
        .read_to_end(&mut prefix)
        .map_err(ApiError::internal)?;
    match probe(Cursor::new(prefix), limits) {
        Ok(info) => Ok((extension, info.width, info.height, info.decode_bytes)),
        Err(DetectError::TooManyPixels {
            width,
            height,
            limit,
        }) => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "image",
            messages::too_many_pixels(width, height, limit),
        )),
        Err(_) => Err(ApiError::image(messages::INVALID_IMAGE)),
    }
}
