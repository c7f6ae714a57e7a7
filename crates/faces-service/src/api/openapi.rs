//! The OpenAPI document at `/openapi.json`, generated from the handlers' annotations
//! and the response types themselves, and Swagger UI at `/docs` (vendored in the binary).
//!
//! This module lists the handlers, so no handler imports it: the types that exist only
//! to describe bodies in the document live in [`super::schema`].

use std::sync::Arc;

use axum::Router;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::Modify;
pub use utoipa::OpenApi;
use utoipa_swagger_ui::{Config, SwaggerUi};

use crate::state::AppState;

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
        super::peers::deepstack::detect,
        super::peers::compreface::detect,
        super::peers::deepstack_faces::register,
        super::peers::deepstack_faces::recognize,
        super::peers::deepstack_faces::list,
        super::peers::deepstack_faces::delete,
        super::peers::compreface_faces::add_subject,
        super::peers::compreface_faces::list_subjects,
        super::peers::compreface_faces::rename_subject,
        super::peers::compreface_faces::delete_subject,
        super::peers::compreface_faces::delete_subjects,
        super::peers::compreface_faces::add_face,
        super::peers::compreface_faces::list_faces,
        super::peers::compreface_faces::delete_faces,
        super::peers::compreface_faces::delete_face,
        super::peers::compreface_faces::delete_several,
        super::peers::compreface_faces::face_image,
        super::peers::compreface_faces::recognize,
        super::peers::compreface_verify::verify_example,
        super::peers::compreface_verify::verify,
        super::subjects::list,
        super::subjects::create,
        super::subjects::show,
        super::subjects::rename,
        super::subjects::delete,
        super::subjects::add_example,
        super::subjects::delete_example,
        super::search::by_stored_face,
        super::search::by_photo,
    ),
    components(schemas(crate::feed::Detection, crate::submission::Status)),
    modifiers(&Security),
    tags(
        (name = "images", description = "Submitting photos and reading results"),
        (name = "feed", description = "Live notifications"),
        (name = "operations", description = "Health, readiness and metrics"),
        (name = "recognition", description = "Subjects (people to recognise) and their example faces; finding a person among the stored faces"),
        (name = "peers", description = "DeepStack's, CodeProject.AI's and CompreFace's detection and recognition endpoints, for their clients: detection answered at once with nothing stored; their subjects and examples are ours"),
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
