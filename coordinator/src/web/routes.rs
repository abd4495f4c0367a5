//! The HTTP edge of the dashboard: routes, authentication on every one, and the conversion
//! of views into responses. Handlers are a few lines each: admit, read a view, render.
//!
//! ```text
//! GET /                 runs            GET /api/runs            JSON of the same views
//! GET /runs/{id}        one run         GET /api/runs/{id}
//! GET /privacy          budgets         GET /api/privacy
//! GET /policy           data flows      GET /api/policy
//! GET /checkpoints      registry        GET /api/checkpoints
//! GET /audit            audit log       GET /api/audit
//! GET /events           server-sent "change" events while runs progress
//! GET /metrics          Prometheus text (fedra_telemetry)
//! GET /healthz          200 while the process runs        (no token: for probes)
//! GET /readyz           200 while it leads and serves, 503 naming its stage otherwise
//! GET /assets/...       the stylesheet and the live-update script
//! ```

use super::access::{self, Presented, Refusal, Section, Viewer};
use super::pages::{self, Nav};
use super::runs::ViewError;
use super::{Shared, oversight, runs};
use crate::grpc::auth::Access;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use serde::Serialize;
use std::convert::Infallible;

/// The header the live script sends to get only the `<main>` content.
const PARTIAL: &str = "x-fedra-partial";

pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/", get(runs_page))
        .route("/runs/{id}", get(run_page))
        .route("/privacy", get(privacy_page))
        .route("/policy", get(policy_page))
        .route("/checkpoints", get(checkpoints_page))
        .route("/audit", get(audit_page))
        .route("/api/runs", get(runs_json))
        .route("/api/runs/{id}", get(run_json))
        .route("/api/privacy", get(privacy_json))
        .route("/api/policy", get(policy_json))
        .route("/api/checkpoints", get(checkpoints_json))
        .route("/api/audit", get(audit_json))
        .route("/events", get(events))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/assets/dashboard.css", get(|| async { asset("text/css", include_str!("assets/dashboard.css")) }))
        .route("/assets/live.js", get(|| async { asset("text/javascript", include_str!("assets/live.js")) }))
        .fallback(|uri: Uri| async move { plain(StatusCode::NOT_FOUND, format!("no such page: {}", uri.path())) })
        .with_state(state)
}

/// A one-line plain-text answer (refusals and failures).
fn plain(status: StatusCode, line: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], line + "\n").into_response()
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

fn refused(r: Refusal) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::FORBIDDEN);
    let mut resp = plain(status, r.reason);
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"fedra dashboard\""));
    }
    resp
}

fn failed(e: ViewError) -> Response {
    match e {
        ViewError::NotFound(m) => plain(StatusCode::NOT_FOUND, m),
        ViewError::Forbidden(m) => plain(StatusCode::FORBIDDEN, m),
        other => {
            tracing::warn!(error = %other, "dashboard view failed");
            plain(StatusCode::INTERNAL_SERVER_ERROR, format!("the dashboard could not read it: {other}"))
        }
    }
}

/// Who asks, and what they may see of `section`; a `?token=` visit is answered with a
/// redirect that sets the cookie and takes the token out of the address.
fn gate(state: &Shared, headers: &HeaderMap, uri: &Uri, section: Section) -> Result<(Viewer, Access), Box<Response>> {
    let text = |name| headers.get(name).and_then(|v: &HeaderValue| v.to_str().ok());
    let presented =
        Presented { authorization: text(header::AUTHORIZATION), cookie: text(header::COOKIE), query: uri.query() };
    let admitted = state.doorman.admit(presented).map_err(|r| Box::new(refused(r)))?;
    if admitted.set_cookie {
        let token = access::token_in_query(uri.query()).unwrap_or_default();
        let target = match uri.query().and_then(access::without_token) {
            Some(rest) => format!("{}?{rest}", uri.path()),
            None => uri.path().to_string(),
        };
        let cookie = HeaderValue::from_str(&access::cookie_for(token)).map_err(|_| {
            Box::new(refused(Refusal { status: 401, reason: "the token holds characters a cookie cannot".into() }))
        })?;
        let location = HeaderValue::from_str(&target).unwrap_or_else(|_| HeaderValue::from_static("/"));
        return Err(Box::new(
            (StatusCode::SEE_OTHER, [(header::SET_COOKIE, cookie), (header::LOCATION, location)]).into_response(),
        ));
    }
    let policy = state.sources.governance.snapshot();
    let granted = access::authorize(&admitted.viewer, section, policy.as_ref()).map_err(|r| Box::new(refused(r)))?;
    Ok((admitted.viewer, granted))
}

/// The whole page, or only its `<main>` content for the live script.
fn html(headers: &HeaderMap, title: &str, nav: Nav, viewer: &Viewer, main: String) -> Response {
    let body = if headers.contains_key(PARTIAL) {
        main
    } else {
        let who = match viewer {
            Viewer::Open => "open (--insecure, no token)".to_string(),
            Viewer::Holder(identity) => format!("token holder, role {}", identity.role()),
        };
        pages::layout(title, nav, &who, &main)
    };
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], body).into_response()
}

fn json<T: Serialize>(value: &T) -> Response {
    match serde_json::to_string(value) {
        Ok(body) => {
            ([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")], body).into_response()
        }
        Err(e) => plain(StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode the answer as JSON: {e}")),
    }
}

/// Scientists (`Own`) see only their own runs.
fn owner(viewer: &Viewer, access: Access) -> Option<&fedra_types::identity::Identity> {
    match (viewer, access) {
        (Viewer::Holder(identity), Access::Own) => Some(identity),
        _ => None,
    }
}

macro_rules! admit {
    ($state:expr, $headers:expr, $uri:expr, $section:expr) => {
        match gate(&$state, &$headers, &$uri, $section) {
            Ok(v) => v,
            Err(response) => return *response,
        }
    };
}

async fn runs_page(State(s): State<Shared>, headers: HeaderMap, uri: Uri) -> Response {
    let (viewer, access) = admit!(s, headers, uri, Section::Runs);
    match runs::recent(&s.sources, owner(&viewer, access)).await {
        Ok(rows) => html(&headers, "Runs", Nav::Runs, &viewer, pages::runs(&rows)),
        Err(e) => failed(e),
    }
}

async fn run_page(State(s): State<Shared>, headers: HeaderMap, uri: Uri, Path(id): Path<String>) -> Response {
    let (viewer, access) = admit!(s, headers, uri, Section::Runs);
    match runs::detail(&s.sources, &id, owner(&viewer, access)).await {
        Ok(d) => html(&headers, &format!("Run {id}"), Nav::Runs, &viewer, pages::run(&d)),
        Err(e) => failed(e),
    }
}

async fn privacy_page(State(s): State<Shared>, headers: HeaderMap, uri: Uri) -> Response {
    let (viewer, _) = admit!(s, headers, uri, Section::Privacy);
    match oversight::privacy(&s.sources).await {
        Ok(rows) => html(&headers, "Privacy budgets", Nav::Privacy, &viewer, pages::privacy(&rows)),
        Err(e) => failed(e),
    }
}

async fn policy_page(State(s): State<Shared>, headers: HeaderMap, uri: Uri) -> Response {
    let (viewer, _) = admit!(s, headers, uri, Section::Runs);
    html(&headers, "Data flows", Nav::Policy, &viewer, pages::flows(oversight::flows(&s.sources).as_ref()))
}

async fn checkpoints_page(State(s): State<Shared>, headers: HeaderMap, uri: Uri) -> Response {
    let (viewer, access) = admit!(s, headers, uri, Section::Checkpoints);
    let rows = match checkpoint_rows(&s, &viewer, access).await {
        Ok(rows) => rows,
        Err(e) => return failed(e),
    };
    html(&headers, "Checkpoints", Nav::Checkpoints, &viewer, pages::checkpoints(&rows))
}

async fn checkpoint_rows(
    s: &Shared,
    viewer: &Viewer,
    access: Access,
) -> Result<Vec<oversight::CheckpointRow>, ViewError> {
    let region = match viewer {
        Viewer::Open => None,
        Viewer::Holder(identity) => oversight::checkpoint_region(access, identity.region())?,
    };
    oversight::checkpoints(&s.sources, region.as_ref()).await
}

async fn audit_page(State(s): State<Shared>, headers: HeaderMap, uri: Uri) -> Response {
    let (viewer, _) = admit!(s, headers, uri, Section::Audit);
    match oversight::audit(&s.sources).await {
        Ok(view) => html(&headers, "Audit log", Nav::Audit, &viewer, pages::audit(&view)),
        Err(e) => failed(e),
    }
}

async fn runs_json(State(s): State<Shared>, headers: HeaderMap, uri: Uri) -> Response {
    let (viewer, access) = admit!(s, headers, uri, Section::Runs);
    runs::recent(&s.sources, owner(&viewer, access)).await.map_or_else(failed, |v| json(&v))
}

async fn run_json(State(s): State<Shared>, headers: HeaderMap, uri: Uri, Path(id): Path<String>) -> Response {
    let (viewer, access) = admit!(s, headers, uri, Section::Runs);
    runs::detail(&s.sources, &id, owner(&viewer, access)).await.map_or_else(failed, |v| json(&v))
}

async fn privacy_json(State(s): State<Shared>, headers: HeaderMap, uri: Uri) -> Response {
    admit!(s, headers, uri, Section::Privacy);
    oversight::privacy(&s.sources).await.map_or_else(failed, |v| json(&v))
}

async fn policy_json(State(s): State<Shared>, headers: HeaderMap, uri: Uri) -> Response {
    admit!(s, headers, uri, Section::Runs);
    json(&oversight::flows(&s.sources))
}

async fn checkpoints_json(State(s): State<Shared>, headers: HeaderMap, uri: Uri) -> Response {
    let (viewer, access) = admit!(s, headers, uri, Section::Checkpoints);
    checkpoint_rows(&s, &viewer, access).await.map_or_else(failed, |v| json(&v))
}

async fn audit_json(State(s): State<Shared>, headers: HeaderMap, uri: Uri) -> Response {
    admit!(s, headers, uri, Section::Audit);
    oversight::audit(&s.sources).await.map_or_else(failed, |v| json(&v))
}

/// One `change` event whenever the engine reports progress of any run (coalesced by the
/// page). The event carries nothing: the page re-reads what its viewer may see. Ends when
/// the dashboard stops.
async fn events(State(s): State<Shared>, headers: HeaderMap, uri: Uri) -> Response {
    admit!(s, headers, uri, Section::Metrics);
    let live = match s.sources.engine.all_events().await {
        Ok(rx) => rx,
        Err(e) => return plain(StatusCode::SERVICE_UNAVAILABLE, format!("the round engine is not running: {e}")),
    };
    let mut stop = s.stop.clone();
    let stopped = async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    };
    // A lagging receiver still means "something changed".
    let stream = tokio_stream::wrappers::BroadcastStream::new(live)
        .map(|_| Ok::<_, Infallible>(Event::default().event("change").data("changed")))
        .take_until(Box::pin(stopped));
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

async fn metrics(State(s): State<Shared>, headers: HeaderMap, uri: Uri) -> Response {
    admit!(s, headers, uri, Section::Metrics);
    ([(header::CONTENT_TYPE, fedra_telemetry::CONTENT_TYPE)], fedra_telemetry::render()).into_response()
}

/// Kubernetes' readiness probe (which cannot speak gRPC over TLS): the same answer as the
/// gRPC health service, without a token since it discloses only the stage.
async fn readyz(State(s): State<Shared>) -> Response {
    use crate::grpc::readiness::Stage;
    match s.sources.readiness.stage() {
        Stage::Serving => (StatusCode::OK, "serving\n").into_response(),
        stage => (StatusCode::SERVICE_UNAVAILABLE, format!("{stage:?}\n")).into_response(),
    }
}
