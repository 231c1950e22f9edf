//! The HTTP/1.1 server: accept loop, routing, request limits and shutdown.
//!
//! One task per connection (hyper's HTTP/1 server), one task per running exec; all are owned
//! by a [`TaskTracker`] and end on shutdown. Shutdown stops accepting, asks every connection to
//! finish its in-flight request, kills running commands and waits up to [`SHUTDOWN_GRACE`].
//! Dropping the listener first removes a Unix socket file.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use banger_proto::agent::{
    AgentErrorCode, EXEC_PATH, ErrorBody, ErrorReply, ExecRequest, HEALTHZ_PATH, INFO_PATH,
};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::config::Config;
use crate::listen::{Conn, Listener};
use crate::{exec, health, info};

/// How long shutdown waits for in-flight requests before giving up on them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A client must send its request headers within this long (slow-loris guard; also closes
/// idle keep-alive connections).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A request body must arrive within this long.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Pause after a failed accept (EMFILE and the like) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The response body type: a whole JSON document or a stream of exec frames.
type RespBody = BoxBody<Bytes, Infallible>;

/// Shared by every connection.
struct State {
    config: Config,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

/// Serves `listener` until `shutdown` is cancelled, then shuts down as the module doc says.
pub async fn run(config: Config, listener: Listener, shutdown: CancellationToken) {
    let tracker = TaskTracker::new();
    let state = Arc::new(State {
        config,
        shutdown: shutdown.clone(),
        tracker: tracker.clone(),
    });
    tracing::info!(
        listen = %state.config.listen,
        exec = state.config.allow_exec,
        version = crate::VERSION,
        "agent serving"
    );
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => {
                    tracker.spawn(serve_connection(state.clone(), conn));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::select! {
                        () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                        () = shutdown.cancelled() => break,
                    }
                }
            },
            () = shutdown.cancelled() => break,
        }
    }
    tracing::info!("shutting down");
    // No new connections from here on (and a Unix socket file disappears now).
    drop(listener);
    tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            remaining = tracker.len(),
            "requests still running after the shutdown grace period; dropping them"
        );
    }
    tracing::info!("agent stopped");
}

async fn serve_connection(state: Arc<State>, conn: Box<dyn Conn>) {
    let svc_state = state.clone();
    let service = hyper::service::service_fn(move |req| {
        let state = svc_state.clone();
        async move { Ok::<_, Infallible>(route(state, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(conn), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        }
        () = state.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, conn).await;
        }
    }
}

async fn route(state: Arc<State>, req: Request<Incoming>) -> Response<RespBody> {
    let span = tracing::debug_span!("request", method = %req.method(), path = req.uri().path());
    async move {
        let resp = match (req.method(), req.uri().path()) {
            (&Method::GET, HEALTHZ_PATH) => blocking_json(health::gather).await,
            (&Method::GET, INFO_PATH) => {
                let exec_enabled = state.config.allow_exec;
                blocking_json(move || info::gather(exec_enabled)).await
            }
            (&Method::POST, EXEC_PATH) => handle_exec(&state, req).await,
            (_, HEALTHZ_PATH | INFO_PATH | EXEC_PATH) => error_response(
                AgentErrorCode::MethodNotAllowed,
                format!("{} is not allowed on {}", req.method(), req.uri().path()),
            ),
            (_, path) => error_response(AgentErrorCode::NotFound, format!("no endpoint {path}")),
        };
        tracing::debug!(status = resp.status().as_u16(), "answered");
        resp
    }
    .instrument(span)
    .await
}

/// Runs a blocking `/proc` reader on the blocking pool and answers its result as JSON.
async fn blocking_json<T, E, F>(f: F) -> Response<RespBody>
where
    T: Serialize + Send + 'static,
    E: std::error::Error + Send + 'static,
    F: FnOnce() -> Result<T, E> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => json_response(StatusCode::OK, &v),
        Ok(Err(e)) => {
            tracing::warn!(error = %error_chain(&e), "gathering guest state failed");
            error_response(AgentErrorCode::Internal, error_chain(&e))
        }
        Err(e) => error_response(AgentErrorCode::Internal, format!("worker failed: {e}")),
    }
}

async fn handle_exec(state: &State, req: Request<Incoming>) -> Response<RespBody> {
    if !state.config.allow_exec {
        return error_response(
            AgentErrorCode::ExecDisabled,
            "exec is disabled on this agent (set allow_exec = true in its config or pass \
             --allow-exec)",
        );
    }
    let max = state.config.max_request_bytes;
    // Refuse an announced oversized body before reading any of it.
    let announced = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > max) {
        return too_large(max);
    }
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    let body = match tokio::time::timeout(
        BODY_READ_TIMEOUT,
        Limited::new(req.into_body(), limit).collect(),
    )
    .await
    {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => return too_large(max),
        Ok(Err(e)) => {
            return error_response(
                AgentErrorCode::InvalidArgument,
                format!("reading the request body: {e}"),
            );
        }
        Err(_) => {
            return error_response(
                AgentErrorCode::RequestTimeout,
                format!("the request body did not arrive within {BODY_READ_TIMEOUT:?}"),
            );
        }
    };
    let exec_req: ExecRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error_response(
                AgentErrorCode::InvalidArgument,
                format!("the body is not an exec request: {e}"),
            );
        }
    };
    match exec::start(
        exec_req,
        state.config.exec_timeout_max,
        state.shutdown.clone(),
        &state.tracker,
    )
    .await
    {
        Ok(rx) => {
            let mut resp = Response::new(ChannelBody(rx).boxed());
            resp.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-ndjson"),
            );
            resp
        }
        Err(body) => {
            tracing::info!(code = %body.code, message = %body.message, "exec refused");
            error_body_response(body)
        }
    }
}

fn too_large(max: u64) -> Response<RespBody> {
    error_response(
        AgentErrorCode::TooLarge,
        format!("the request body is larger than the agent's limit of {max} bytes"),
    )
}

fn json_response<T: Serialize>(status: StatusCode, v: &T) -> Response<RespBody> {
    match serde_json::to_vec(v) {
        Ok(body) => {
            let mut resp = Response::new(Full::new(Bytes::from(body)).boxed());
            *resp.status_mut() = status;
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            resp
        }
        Err(e) => {
            let mut resp = Response::new(Full::new(Bytes::from(e.to_string())).boxed());
            *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            resp
        }
    }
}

fn error_response(code: AgentErrorCode, message: impl Into<String>) -> Response<RespBody> {
    error_body_response(ErrorBody {
        code,
        message: message.into(),
    })
}

fn error_body_response(error: ErrorBody) -> Response<RespBody> {
    let status =
        StatusCode::from_u16(error.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, &ErrorReply { error })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// A response body fed by an exec driver: each message is one JSON line, sent as one chunk as
/// soon as it is produced.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|m| m.map(|b| Ok(Frame::data(b))))
    }
}
