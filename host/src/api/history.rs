//! `GET /api/history?since=<ms>&types=metric,alert`: the recent outputs the
//! hub published (see `crate::sink::history`), oldest first, as a JSON
//! array of the objects `/ws` sent. A bad parameter is a 400 that names it.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use crate::sink::history::{Types, json_array};

/// What the query asks for.
#[derive(Debug, PartialEq)]
struct HistoryQuery {
    since: i64,
    types: Types,
}

impl HistoryQuery {
    /// From the decoded query pairs; an error names the parameter.
    fn parse(pairs: &[(String, String)]) -> Result<HistoryQuery, String> {
        let mut since = None;
        let mut types = None;
        for (name, value) in pairs {
            let slot = match name.as_str() {
                "since" => &mut since,
                "types" => &mut types,
                other => {
                    return Err(format!(
                        "unknown parameter `{other}`: use `since` (ms since the epoch) and `types` (metric,alert)"
                    ));
                }
            };
            if slot.replace(value.as_str()).is_some() {
                return Err(format!("`{name}` is given more than once"));
            }
        }
        let since = match since {
            None => i64::MIN,
            Some(s) => s.trim().parse().map_err(|_| {
                format!("`since` must be ms since the epoch (an integer), got `{s}`")
            })?,
        };
        let types = Types::parse(types).map_err(|e| format!("`types`: {e}"))?;
        Ok(HistoryQuery { since, types })
    }
}

pub async fn get(
    State(state): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let Ok(Query(pairs)) = query else {
        return bad_request("the query string is not URL-encoded `name=value` pairs".into());
    };
    let q = match HistoryQuery::parse(&pairs) {
        Ok(q) => q,
        Err(e) => return bad_request(e),
    };
    let lines = state
        .hub
        .history()
        .map(|h| h.since(q.since, q.types))
        .unwrap_or_default();
    (
        [(header::CONTENT_TYPE, "application/json")],
        json_array(&lines),
    )
        .into_response()
}

fn bad_request(error: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({ "error": error })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<HistoryQuery, String> {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        HistoryQuery::parse(&owned)
    }

    #[test]
    fn parameters_and_their_errors() {
        assert_eq!(
            parse(&[]).unwrap(),
            HistoryQuery {
                since: i64::MIN,
                types: Types::ALL
            }
        );
        let q = parse(&[("since", "1764000000000"), ("types", "alert")]).unwrap();
        assert_eq!(q.since, 1_764_000_000_000);
        assert!(q.types.alert && !q.types.metric);
        let err = |pairs: &[(&str, &str)]| parse(pairs).unwrap_err();
        assert!(err(&[("since", "yesterday")]).starts_with("`since` must be ms"));
        assert!(err(&[("since", "1.5")]).contains("`1.5`"));
        assert!(
            err(&[("types", "metric,pipeline")])
                .starts_with("`types`: unknown output type `pipeline`")
        );
        assert!(err(&[("sinse", "1")]).starts_with("unknown parameter `sinse`"));
        assert!(err(&[("since", "1"), ("since", "2")]).contains("more than once"));
    }
}
