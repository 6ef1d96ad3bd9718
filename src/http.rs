//! The daemon's HTTP endpoints (`/healthz`, `/readyz`, `/metrics`, `/status`) and the client
//! `inlet status` uses to read `/status` from a running daemon.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

use crate::state::{Metrics, Phase, TaskState, TaskStatus};

pub struct Endpoints {
    pub tasks: Vec<TaskState>,
    pub metrics: Arc<Metrics>,
    /// `/readyz` answers 503 when a task's lag is above this.
    pub ready_max_lag_s: f64,
}

/// Binds `address` and serves until the process ends. Binding errors are returned at once so
/// a port clash is reported at start-up.
pub async fn serve(
    address: &str,
    endpoints: Arc<Endpoints>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), String> {
    let listener = tokio::net::TcpListener::bind(address).await.map_err(|e| {
        format!("service.listen {address:?}: cannot listen there: {e}; choose a free address:port ([service] listen in a task file, or --listen)")
    })?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("service.listen {address:?}: {e}"))?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .with_state(endpoints);
    let handle = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the HTTP server stopped");
        }
    });
    Ok((bound, handle))
}

/// Why a task is not ready, or None when it is.
fn not_ready(status: &TaskStatus, max_lag: f64) -> Option<String> {
    match &status.phase {
        Phase::Done => None,
        Phase::Failed { reason } => Some(format!("failed: {reason}")),
        Phase::Retrying { reason } => Some(format!("retrying: {reason}")),
        // Say what it waits for: a source that accepts connections and never answers keeps a
        // task here until source.connect_timeout_s passes.
        Phase::Starting if !status.connected => Some(format!(
            "starting: not connected to the source {} yet (an attempt gives up after \
             source.connect_timeout_s)",
            status.source
        )),
        Phase::Starting => Some("starting".into()),
        Phase::Stopped => Some("stopped".into()),
        Phase::Snapshotting | Phase::Streaming if !status.connected => {
            Some("not connected to the source".into())
        }
        Phase::Snapshotting | Phase::Streaming if status.lag_seconds > max_lag => Some(format!(
            "lag {:.1} s is above service.ready_max_lag_s = {max_lag}",
            status.lag_seconds
        )),
        Phase::Snapshotting | Phase::Streaming => None,
    }
}

async fn readyz(State(e): State<Arc<Endpoints>>) -> impl IntoResponse {
    let reasons: Vec<String> = e
        .tasks
        .iter()
        .filter_map(|t| {
            let s = t.snapshot();
            not_ready(&s, e.ready_max_lag_s).map(|r| format!("task {}: {r}", s.task))
        })
        .collect();
    if reasons.is_empty() {
        (StatusCode::OK, "ready\n".to_string())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready\n{}\n", reasons.join("\n")),
        )
    }
}

async fn metrics(State(e): State<Arc<Endpoints>>) -> impl IntoResponse {
    // Reading each task's status refreshes the gauges that depend on the clock (lag).
    for t in &e.tasks {
        t.snapshot();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        e.metrics.encode(),
    )
}

async fn status(State(e): State<Arc<Endpoints>>) -> impl IntoResponse {
    let tasks: Vec<TaskStatus> = e.tasks.iter().map(TaskState::snapshot).collect();
    Json(serde_json::json!({ "tasks": tasks }))
}

/// GET `path` from a running daemon at `address` (host:port); the body on a 2xx answer.
pub async fn get_from_daemon(address: &str, path: &str) -> Result<String, String> {
    use http_body_util::{BodyExt, Empty};
    use hyper::body::Bytes;

    let unreachable = |e: &dyn std::fmt::Display| {
        format!("cannot reach an inlet daemon at {address}: {e}; is `inlet run` running, and is this its service.listen address?")
    };
    let stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| unreachable(&e))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(&e))?;
    tokio::spawn(conn);
    let request = hyper::Request::get(path)
        .header(header::HOST, address)
        .body(Empty::<Bytes>::new())
        .map_err(|e| unreachable(&e))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| unreachable(&e))?;
    let code = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| unreachable(&e))?
        .to_bytes();
    let body = String::from_utf8_lossy(&body).into_owned();
    if code.is_success() {
        Ok(body)
    } else {
        Err(format!("{address}{path} answered {code}: {body}"))
    }
}

/// `inlet status`: the daemon's `/status` as a table.
pub fn render_status_table(json: &str) -> Result<String, String> {
    let doc: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("the daemon's /status is not JSON: {e}"))?;
    let mut out = String::new();
    let tasks = doc["tasks"].as_array().cloned().unwrap_or_default();
    out.push_str(&format!(
        "{:<24} {:<18} {:<10} {:>10} {:>18}  {}\n",
        "TASK / TABLE", "MODE", "PHASE", "LAG (s)", "POSITION", "DETAIL"
    ));
    for t in &tasks {
        let phase = t["phase"].as_str().unwrap_or("?");
        let detail = t["reason"].as_str().unwrap_or("");
        out.push_str(&format!(
            "{:<24} {:<18} {:<10} {:>10.1} {:>18}  {}\n",
            t["task"].as_str().unwrap_or("?"),
            t["mode"].as_str().unwrap_or(""),
            phase,
            t["lag_seconds"].as_f64().unwrap_or(0.0),
            t["position"].as_str().unwrap_or("-"),
            detail
        ));
        for table in t["tables"].as_array().cloned().unwrap_or_default() {
            let snap = match (
                table["snapshot_done"].as_bool(),
                table["snapshot_percent"].as_f64(),
            ) {
                (Some(true), _) => "loaded".to_string(),
                (_, Some(p)) => format!("loading {p:.0}%"),
                _ => String::new(),
            };
            out.push_str(&format!(
                "  {:<22} {:<18} {:<10} {:>10} {:>18}  {} changes {}\n",
                table["table"].as_str().unwrap_or("?"),
                "",
                "",
                "",
                "",
                table["changes_written"].as_u64().unwrap_or(0),
                snap
            ));
        }
    }
    Ok(out)
}
