//! The daemon's HTTP endpoints (`/healthz`, `/readyz`, `/metrics`, `/status`, and
//! `POST /tasks/{task}/tables/{table}/resync`) and the client `inlet status` and `inlet resync`
//! use to reach a running daemon.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::oneshot;

use crate::state::{Metrics, Phase, TaskState, TaskStatus};

pub struct Endpoints {
    pub tasks: Vec<TaskState>,
    pub metrics: Arc<Metrics>,
    /// `/readyz` answers 503 when a task's lag is above this.
    pub ready_max_lag_s: f64,
    /// This daemon as task leases name it (`host/pid`).
    pub daemon: String,
}

/// Bounds on the HTTP server's connections (`[service] header_read_timeout_s`,
/// `max_connections`).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
}

/// The open connections, oldest first, each with the sender that closes it.
type OpenConnections = Arc<Mutex<VecDeque<(u64, oneshot::Sender<()>)>>>;

/// Binds `address` and serves until the process ends. Binding errors are returned at once so
/// a port clash is reported at start-up.
///
/// The endpoints must never share the fate of a client: a connection that sends no request
/// head within the timeout is closed, and at most `max_connections` are open at once (the
/// oldest is closed for a new one, so a probe always gets in and the tasks always have file
/// descriptors). An accept error (out of file descriptors) pauses accepting briefly instead of
/// ending the server.
pub async fn serve(
    address: &str,
    endpoints: Arc<Endpoints>,
    limits: ConnectionLimits,
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
        .route("/tasks/{task}/tables/{table}/resync", post(resync))
        .with_state(endpoints);
    let handle = tokio::spawn(accept_loop(listener, app, limits));
    Ok((bound, handle))
}

async fn accept_loop(listener: tokio::net::TcpListener, app: Router, limits: ConnectionLimits) {
    let open: OpenConnections = Arc::default();
    let mut next_id: u64 = 0;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "the HTTP endpoint cannot accept a connection; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        next_id += 1;
        let id = next_id;
        let (close, closed) = oneshot::channel();
        {
            // A poisoned lock only means a connection task panicked; the list is still whole.
            let mut open = open.lock().unwrap_or_else(|p| p.into_inner());
            while open.len() >= limits.max_connections {
                match open.pop_front() {
                    Some((_, oldest)) => {
                        let _ = oldest.send(());
                    }
                    None => break,
                }
            }
            open.push_back((id, close));
        }
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let open = open.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::select! {
                result = conn => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "HTTP connection ended");
                    }
                }
                _ = closed => tracing::debug!("HTTP connection closed to make room for a new one"),
            }
            let mut open = open.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(i) = open.iter().position(|(other, _)| *other == id) {
                open.remove(i);
            }
        });
    }
}

/// Why a task is not ready, or None when it is.
fn not_ready(status: &TaskStatus, max_lag: f64) -> Option<String> {
    match &status.phase {
        // Another daemon of the fleet runs it (or will): nothing for this one to do.
        Phase::Done { .. } | Phase::Standby { .. } => None,
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
            let s = t.current();
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
    // Reading each task's status refreshes the gauges that depend on the clock (lag) and on
    // the lease (a fenced task is not connected).
    for t in &e.tasks {
        t.current();
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
    let tasks: Vec<TaskStatus> = e.tasks.iter().map(TaskState::current).collect();
    Json(serde_json::json!({ "daemon": e.daemon, "tasks": tasks }))
}

/// GET `path` from a running daemon at `address` (host:port); the body on a 2xx answer.
pub async fn get_from_daemon(address: &str, path: &str) -> Result<String, String> {
    call_daemon(hyper::Method::GET, address, path).await
}

/// `method` `path` on a running daemon at `address` (host:port); the body on a 2xx answer.
async fn call_daemon(method: hyper::Method, address: &str, path: &str) -> Result<String, String> {
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
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
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
        Err(format!(
            "{address}{path} answered {code}: {}",
            body.trim_end()
        ))
    }
}

/// Whether a daemon answering at `address` runs task `task` now (connecting, loading,
/// streaming or waiting to retry), not failed or stopped. False when nothing answers there
/// within 2 s.
pub async fn task_running(address: &str, task: &str) -> bool {
    let Ok(Ok(body)) =
        tokio::time::timeout(Duration::from_secs(2), get_from_daemon(address, "/status")).await
    else {
        return false;
    };
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(&body) else {
        return false;
    };
    doc["tasks"].as_array().is_some_and(|tasks| {
        tasks.iter().any(|t| {
            t["task"].as_str() == Some(task)
                && matches!(
                    t["phase"].as_str(),
                    Some("starting" | "snapshotting" | "streaming" | "retrying")
                )
        })
    })
}

/// Asks the daemon at `address` to resync `table` of its running task `task`.
pub async fn ask_resync(address: &str, task: &str, table: &str) -> Result<String, String> {
    let path = format!(
        "/tasks/{}/tables/{}/resync",
        percent_encode(task),
        percent_encode(table)
    );
    call_daemon(hyper::Method::POST, address, &path).await
}

/// A path segment with everything but unreserved characters percent-encoded.
fn percent_encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `POST /tasks/{task}/tables/{table}/resync`: the running task loads `table` again beside its
/// stream (see [`crate::resync`]). 202 once asked; 404 for a task or table the daemon does not
/// have; 409 when the task cannot resync now (its mode loads no table, or it is not running).
async fn resync(
    State(e): State<Arc<Endpoints>>,
    Path((task, table)): Path<(String, String)>,
) -> impl IntoResponse {
    let Some(state) = e.tasks.iter().find(|t| t.snapshot().task == task) else {
        let names: Vec<String> = e.tasks.iter().map(|t| t.snapshot().task).collect();
        return (
            StatusCode::NOT_FOUND,
            format!(
                "no task {task:?} in this daemon; its tasks: {}\n",
                names.join(", ")
            ),
        );
    };
    let status = state.current();
    if status.mode != "full-load-and-cdc" {
        return (
            StatusCode::CONFLICT,
            format!(
                "task {task:?}: task.mode = {:?} loads no table beside a stream, so it cannot \
                 resync one; use task.mode = \"full-load-and-cdc\"\n",
                status.mode
            ),
        );
    }
    match &status.phase {
        Phase::Starting | Phase::Snapshotting | Phase::Streaming | Phase::Retrying { .. } => {}
        phase => {
            let why = match phase {
                Phase::Failed { reason } => format!("failed: {reason}"),
                _ => "stopped".to_string(),
            };
            return (
                StatusCode::CONFLICT,
                format!(
                    "task {task:?} is not running ({why}); run `inlet resync -c <task file> \
                     {table}`, which records the resync in its checkpoint, then start the \
                     daemon again\n"
                ),
            );
        }
    }
    let tables: Vec<String> = status.tables.iter().map(|t| t.table.clone()).collect();
    // A task (re)starting lists no tables yet: its start checks the name against the tables
    // it discovers (and warns if it has none of that name).
    let starting =
        tables.is_empty() && matches!(status.phase, Phase::Starting | Phase::Retrying { .. });
    let name = if starting {
        Some(&table)
    } else {
        crate::resync::resolve(&table, &tables)
    };
    let Some(name) = name else {
        return (
            StatusCode::NOT_FOUND,
            format!(
                "task {task:?} does not stream a table {table:?} now (a table loading beside the \
                 stream is not listed until it is loaded); its tables: {}\n",
                tables.join(", ")
            ),
        );
    };
    crate::resync::ask(&task, name);
    (
        StatusCode::ACCEPTED,
        format!(
            "task {task:?}: {name} is loaded again beside the stream from its next transaction \
             boundary; the other tables keep streaming\n"
        ),
    )
}

/// `inlet status`: the daemon's `/status` as a table.
pub fn render_status_table(json: &str) -> Result<String, String> {
    let doc: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("the daemon's /status is not JSON: {e}"))?;
    let mut out = String::new();
    let tasks = doc["tasks"].as_array().cloned().unwrap_or_default();
    if let Some(daemon) = doc["daemon"].as_str() {
        out.push_str(&format!("daemon {daemon}\n"));
    }
    out.push_str(&format!(
        "{:<24} {:<18} {:<10} {:>10} {:>18}  {:<20} {}\n",
        "TASK / TABLE", "MODE", "PHASE", "LAG (s)", "POSITION", "OWNER", "DETAIL"
    ));
    for t in &tasks {
        let phase = t["phase"].as_str().unwrap_or("?");
        let detail = t["reason"].as_str().unwrap_or("");
        let owner = match (t["owner"].as_str(), doc["daemon"].as_str()) {
            (Some(o), Some(me)) if o == me => format!("{o} (this)"),
            (Some(o), _) => o.to_string(),
            (None, _) => "-".to_string(),
        };
        out.push_str(&format!(
            "{:<24} {:<18} {:<10} {:>10.1} {:>18}  {:<20} {}\n",
            t["task"].as_str().unwrap_or("?"),
            t["mode"].as_str().unwrap_or(""),
            phase,
            t["lag_seconds"].as_f64().unwrap_or(0.0),
            t["position"].as_str().unwrap_or("-"),
            owner,
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
