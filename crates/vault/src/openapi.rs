//! The OpenAPI 3 document of every `/api/v1` route, generated from the handlers' annotations and
//! served at `/api/v1/openapi.json`. A test checks that no route the router serves is missing.

use crate::{api, live, search, session};
use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "Osprey vault API", description = "Recordings, events and search of an Osprey vault. \
        Every call but signed downloads needs an account's keys: HTTP Basic (access key, secret key) \
        or the Kerberos headers X-Kerberos-Storage-AccessKey and X-Kerberos-Storage-SecretAccessKey, \
        or the web app's session cookie (from POST /api/v1/session), with X-CSRF-Token on every call \
        that changes something."),
    paths(
        api::list, api::get, api::signed_url, api::download, api::devices, api::system,
        crate::reanalyse::start, crate::reanalyse::get, crate::reanalyse::list, crate::reanalyse::cancel,
        search::list, search::get, search::thumbnail, search::detections, search::summary, document,
        session::sign_in, session::current, session::sign_out, live::stream,
    ),
    modifiers(&Keys),
    security(("keys" = [])),
)]
struct ApiDoc;

struct Keys;

impl Modify for Keys {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "keys",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Basic).build()),
        );
    }
}

pub fn spec() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta", security(()),
    responses((status = 200, description = "This document", body = Object)))]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(spec())
}

#[cfg(test)]
mod tests {
    /// Every `/api/v1` path the router is given (read from the source, so a route added without
    /// its annotation fails here) is in the document, and the document names no other.
    #[test]
    fn every_api_route_is_in_the_document() {
        let source = include_str!("lib.rs");
        let mut routed: Vec<String> = source
            .split(".route(\"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .filter(|path| path.starts_with("/api/v1"))
            .map(str::to_string)
            .collect();
        routed.sort();
        let mut documented: Vec<String> = super::spec().paths.paths.keys().cloned().collect();
        documented.sort();
        assert!(routed.len() >= 11, "{routed:?}");
        assert_eq!(routed, documented);
    }
}
