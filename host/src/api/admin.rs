//! The mutating plugin API: upload, config change, rollback, delete. Every
//! call needs `Authorization: Bearer <token>` (401 without, 403 with a wrong
//! one), bodies are capped ([`MAX_BODY`], 413 beyond), and calls are rate
//! limited (429). The work runs on a blocking thread: compiling a component
//! takes ~100 ms and must never stall the runtime or the pipeline.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::AppState;
use crate::control::{Control, ControlError, StatePolicy};

/// Largest accepted request body.
pub const MAX_BODY: usize = 16 << 20;

/// A token bucket for mutating calls.
pub struct RateLimit {
    bucket: Mutex<(f64, Instant)>,
    burst: f64,
    per_second: f64,
}

impl RateLimit {
    pub fn new(burst: f64, per_second: f64) -> Self {
        RateLimit {
            bucket: Mutex::new((burst, Instant::now())),
            burst,
            per_second,
        }
    }

    fn take(&self) -> bool {
        let mut b = self.bucket.lock().expect("rate limit lock");
        let now = Instant::now();
        b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * self.per_second).min(self.burst);
        b.1 = now;
        if b.0 >= 1.0 {
            b.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

fn error(status: u16, message: impl Into<String>) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, Json(json!({"error": message.into()}))).into_response()
}

fn reject(status: u16, message: impl Into<String>) -> Box<Response> {
    Box::new(error(status, message))
}

/// Check the bearer token and the rate limit; return the control service.
fn admit(state: &AppState, headers: &HeaderMap) -> Result<Arc<Control>, Box<Response>> {
    let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return Err(reject(
            401,
            "missing `Authorization: Bearer <token>` (the admin token is RTAP_ADMIN_TOKEN, or printed at start)",
        ));
    };
    let token = auth.strip_prefix("Bearer ").unwrap_or("");
    if !constant_time_eq(token.as_bytes(), state.admin_token.as_bytes()) {
        return Err(Box::new(error(403, "wrong admin token")));
    }
    if !state.rate_limit.take() {
        return Err(Box::new(error(429, "too many plugin changes; slow down")));
    }
    if state.registry.role.get() == crate::status::Role::Standby {
        let active = state.cluster.as_ref().and_then(|c| c.active_elsewhere());
        return Err(reject(
            409,
            match active {
                Some(m) => format!(
                    "this host is the group's standby: change plugins through the active host `{}` ({}), which shares them with every host of the group (a standby runs the group's plugins when it takes over)",
                    m.id, m.api
                ),
                None => "this host is the group's standby: change plugins through the active host, which shares them with every host of the group (a standby runs the group's plugins when it takes over)".to_string(),
            },
        ));
    }
    state
        .control
        .clone()
        .ok_or_else(|| reject(503, "plugin changes are not available"))
}

pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn policy(q: &HashMap<String, String>) -> Result<StatePolicy, Box<Response>> {
    match q.get("state").map(String::as_str) {
        None | Some("auto") | Some("keep") => Ok(StatePolicy::Auto),
        Some("reset") => Ok(StatePolicy::Reset),
        Some(other) => Err(reject(
            400,
            format!("state must be `reset` or `auto`, not `{other}`"),
        )),
    }
}

async fn blocking(f: impl FnOnce() -> Result<Value, ControlError> + Send + 'static) -> Response {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => (StatusCode::OK, Json(v)).into_response(),
        Ok(Err(e)) => error(e.status, e.message),
        Err(e) => error(500, format!("internal error: {e}")),
    }
}

/// `PUT /api/plugins/{name}`: raw `.wasm` body; `?config=<json>`,
/// `?state=reset`, `?mode=shadow` (run it beside the live version and
/// compare, see `crate::control`'s shadow.rs; default `mode=live`).
pub async fn put(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let control = match admit(&state, &headers) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let policy = match policy(&q) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    let config = match q.get("config") {
        None => None,
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(v) if v.is_object() => Some(v),
            Ok(_) => return error(400, "config must be a JSON object"),
            Err(e) => return error(400, format!("config is not valid JSON: {e}")),
        },
    };
    if body.is_empty() {
        return error(400, "empty body: send the plugin's .wasm bytes");
    }
    let origin = format!("upload `{name}`");
    match q.get("mode").map(String::as_str) {
        None | Some("live") => {
            blocking(move || control.put(&name, &body, config, policy, &origin)).await
        }
        Some("shadow") => {
            blocking(move || control.put_shadow(&name, &body, config, policy, &origin)).await
        }
        Some(other) => error(
            400,
            format!("mode must be `live` or `shadow`, not `{other}`"),
        ),
    }
}

/// `GET /api/plugins/{name}/shadow?limit=N`: the shadow's comparison so
/// far, with its first `limit` differences (20 by default, at most
/// `compare::KEPT_DIFFERENCES`). Read access, like the other `GET`s.
pub async fn shadow_report(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => 20,
        Some(Ok(n)) => n.min(crate::pipeline::compare::KEPT_DIFFERENCES),
        Some(Err(_)) => {
            return error(
                400,
                format!("limit must be a whole number, not `{}`", q["limit"]),
            );
        }
    };
    let Some(control) = state.control.clone() else {
        return error(503, "plugin changes are not available");
    };
    match control.shadow_report(&name, limit) {
        Ok(v) => (StatusCode::OK, Json(v)).into_response(),
        Err(e) => error(e.status, e.message),
    }
}

/// `POST /api/plugins/{name}/shadow/promote`: the shadow becomes the live
/// version at a barrier.
pub async fn promote_shadow(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let control = match admit(&state, &headers) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    blocking(move || control.promote_shadow(&name)).await
}

/// `DELETE /api/plugins/{name}/shadow`: drop the shadow.
pub async fn discard_shadow(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let control = match admit(&state, &headers) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    blocking(move || control.discard_shadow(&name)).await
}

/// `PATCH /api/plugins/{name}/config`: JSON body, the new config.
pub async fn patch_config(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let control = match admit(&state, &headers) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let config: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(400, format!("the body is not valid JSON: {e}")),
    };
    blocking(move || control.patch_config(&name, config)).await
}

/// `POST /api/plugins/{name}/rollback` (`?state=reset` if schemas differ).
pub async fn rollback(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let control = match admit(&state, &headers) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let policy = match policy(&q) {
        Ok(p) => p,
        Err(r) => return *r,
    };
    blocking(move || control.rollback(&name, policy)).await
}

/// `DELETE /api/plugins/{name}`.
pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let control = match admit(&state, &headers) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    blocking(move || control.delete(&name)).await
}
