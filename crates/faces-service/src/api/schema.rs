//! Types that exist only to describe bodies in the OpenAPI document (the answers
//! themselves are built elsewhere): named in the handlers' annotations, and a leaf,
//! so that the handlers need not import [`super::openapi`], which lists them.

use std::collections::HashMap;

use utoipa::ToSchema;

/// Every error: the field the problem is about (`image`, `limit`, `before`, or
/// `detail` for the request as a whole) with a list of human sentences.
#[derive(ToSchema)]
#[schema(example = json!({"image": ["No file was submitted."]}))]
#[allow(dead_code)]
pub struct ErrorBody(HashMap<String, Vec<String>>);

/// The upload form: the file in field `image` (or `file`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct UploadForm {
    /// A gif, jpg, jpeg or png file; the extension and the bytes must agree.
    #[schema(value_type = String, format = Binary)]
    image: Vec<u8>,
    /// `fast` or `accurate`, as the `mode` query parameter (which wins if both are given).
    mode: Option<String>,
    /// 0-1, as the `threshold` query parameter (which wins if both are given).
    threshold: Option<f64>,
    /// `box`, `blur`, `pixelate` or `none`, as the `mark` query parameter (which wins
    /// if both are given).
    mark: Option<String>,
}

/// `/readyz`: `ok`, or what failed.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Readiness {
    database: String,
    storage: String,
}
