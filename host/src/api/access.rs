//! Read access (`--read-token`, `RTAP_READ_TOKEN`): when set, what shows the
//! pipeline's data — the live stream `/ws`, every `GET /api/…` and
//! `/metrics` — needs `Authorization: Bearer <read token>` (the browser's
//! WebSocket cannot set headers, so `/ws` also takes `?access_token=`). The
//! admin token reads too. `/health` and `/ready` stay open for probes, and
//! the dashboard's static files hold no data: the dashboard asks for the
//! token before it reads anything. Without a read token nothing changes.

use std::collections::HashMap;

use axum::extract::{Query, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::admin::constant_time_eq;

/// Whether a request reads data that the read token guards.
pub fn guarded(method: &Method, path: &str) -> bool {
    path == "/ws"
        || path == "/metrics"
        || ((method == Method::GET || method == Method::HEAD) && path.starts_with("/api/"))
}

/// The bearer token of a request, or its `?access_token=` on `/ws`.
fn token_of(req: &Request) -> Option<String> {
    if let Some(auth) = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
    {
        return Some(auth.strip_prefix("Bearer ").unwrap_or("").to_string());
    }
    if req.uri().path() != "/ws" {
        return None;
    }
    Query::<HashMap<String, String>>::try_from_uri(req.uri())
        .ok()
        .and_then(|Query(q)| q.get("access_token").cloned())
}

/// The middleware: 401 without a token, 403 with a wrong one.
pub async fn require_read_token(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let Some(want) = state.read_token.as_deref() else {
        return next.run(req).await;
    };
    if !guarded(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    let refuse =
        |code: StatusCode, msg: &str| (code, axum::Json(json!({"error": msg}))).into_response();
    match token_of(&req) {
        None => refuse(
            StatusCode::UNAUTHORIZED,
            "reading needs the read token (RTAP_READ_TOKEN): `Authorization: Bearer <token>`, or `?access_token=<token>` on /ws",
        ),
        Some(t)
            if constant_time_eq(t.as_bytes(), want.as_bytes())
                || constant_time_eq(t.as_bytes(), state.admin_token.as_bytes()) =>
        {
            next.run(req).await
        }
        Some(_) => refuse(StatusCode::FORBIDDEN, "wrong read token"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_guarded_changes_and_probes_are_not() {
        for (m, p) in [
            (Method::GET, "/ws"),
            (Method::GET, "/metrics"),
            (Method::GET, "/api/plugins"),
            (Method::GET, "/api/pipeline"),
            (Method::GET, "/api/history"),
            (Method::HEAD, "/api/plugins/page-views"),
        ] {
            assert!(guarded(&m, p), "{m} {p}");
        }
        for (m, p) in [
            (Method::GET, "/health"),
            (Method::GET, "/ready"),
            (Method::GET, "/"),
            (Method::GET, "/assets/index.js"),
            // The admin token guards these.
            (Method::PUT, "/api/plugins/page-views"),
            (Method::DELETE, "/api/plugins/page-views"),
        ] {
            assert!(!guarded(&m, p), "{m} {p}");
        }
    }
}
