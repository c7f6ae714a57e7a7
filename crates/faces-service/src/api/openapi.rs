//! The OpenAPI document at `/openapi.json`, generated from the handlers' annotations
//! and the response types themselves, and Swagger UI at `/docs` (vendored in the binary).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
pub use utoipa::OpenApi;
use utoipa::{Modify, ToSchema};
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::state::AppState;

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
}

/// `/readyz`: `ok`, or what failed.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Readiness {
    database: String,
    storage: String,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "faces",
        description = "Upload a photo; faces finds every face, keeps a marked copy and tells every feed client.",
        license(name = "MIT")
    ),
    paths(
        super::upload::upload,
        super::images::show,
        super::images::list,
        super::processed::serve,
        super::feed::feed,
        super::health::healthcheck,
        super::health::ready,
        super::health::metrics,
    ),
    components(schemas(crate::feed::Detection, crate::submission::Status)),
    modifiers(&Security),
    tags(
        (name = "images", description = "Submitting photos and reading results"),
        (name = "feed", description = "Live notifications"),
        (name = "operations", description = "Health, readiness and metrics"),
    )
)]
pub struct ApiDoc;

/// The optional API keys: a bearer token, or `api_key` in the query for feeds.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "api_key_query",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::new("api_key"))),
        );
    }
}

/// `/openapi.json` and `/docs`.
pub fn routes() -> Router<Arc<AppState>> {
    // No online validator: the page would otherwise ask swagger.io about our document.
    let config = Config::default().validator_url("none");
    Router::from(
        SwaggerUi::new("/docs")
            .url("/openapi.json", ApiDoc::openapi())
            .config(config),
    )
}
