//! The HTTP side of the API socket: HTTP/1.1 over the Unix listener (hyper), every body checked
//! against the official definition (`banger_firecracker::schema`) before [`Vmm`] sees it.
//!
//! Firecracker answers an unknown route, a body that is not JSON and a body that does not match
//! its definition alike: `400 {"fault_message": "..."}`.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use banger_firecracker::schema::ApiSchema;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Mutex;

use crate::log;
use crate::vmm::{Reply, Vmm};

/// Shared by every connection.
#[derive(Debug)]
pub(crate) struct Api {
    pub(crate) vmm: Mutex<Vmm>,
    pub(crate) schema: &'static ApiSchema,
    pub(crate) max_body: usize,
    /// Connections being served, so shutdown can let the last reply go out first.
    pub(crate) open_connections: AtomicUsize,
    /// Set at shutdown: every connection finishes the reply it is writing and closes (an idle
    /// kept-alive one at once).
    pub(crate) closing: tokio::sync::watch::Sender<bool>,
}

/// Serves the API until the task is dropped.
pub(crate) async fn serve(listener: UnixListener, api: Arc<Api>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                log::warn(&format!("api: accept failed: {e}"));
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let api = Arc::clone(&api);
        api.open_connections.fetch_add(1, Ordering::SeqCst);
        let mut closing = api.closing.subscribe();
        tokio::spawn(async move {
            let closing = async move {
                // The guard it returns is not Send: dropped here, before the next await.
                let _ = closing.wait_for(|c| *c).await.map(drop);
            };
            let service = service_fn(|req| {
                let api = Arc::clone(&api);
                async move { Ok::<_, Infallible>(handle(req, &api).await) }
            });
            // Keep-alive, as Firecracker: a client may send several requests on one
            // connection (banger's controller configures a VM over one). At shutdown the
            // connection is closed gracefully: the reply being written goes out first.
            let conn = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let ended = tokio::select! {
                ended = conn.as_mut() => ended,
                () = closing => {
                    conn.as_mut().graceful_shutdown();
                    conn.as_mut().await
                }
            };
            if let Err(e) = ended {
                log::debug(&format!("api: connection ended: {e}"));
            }
            api.open_connections.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// Fault refuse-api: connections are accepted and held, never answered.
pub(crate) async fn serve_refusing(listener: UnixListener) {
    let mut held: Vec<UnixStream> = Vec::new();
    loop {
        if let Ok((s, _)) = listener.accept().await {
            log::warn("fault refuse-api: connection accepted, it will never be answered");
            held.push(s);
        }
    }
}

async fn handle(req: Request<Incoming>, api: &Api) -> Response<Full<Bytes>> {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let reply = match Limited::new(req.into_body(), api.max_body).collect().await {
        Ok(body) => route(api, &method, &path, &body.to_bytes()).await,
        Err(e) => Reply::fault(format!(
            "Request payload is larger than the limit of {} bytes allowed by server, or \
             unreadable: {e}",
            api.max_body
        )),
    };
    if reply.status >= 400 {
        log::warn(&format!("{method} {path}: {}", fault_text(&reply)));
    } else {
        log::debug(&format!("{method} {path}: {}", reply.status));
    }
    to_response(reply)
}

async fn route(api: &Api, method: &str, path: &str, body: &[u8]) -> Reply {
    let Some((route, params)) = api.schema.route(method, path) else {
        return Reply::fault(format!(
            "Invalid request method and/or path: {method} {path}."
        ));
    };
    let json = match (&route.body, body.is_empty()) {
        (Some(def), false) => match serde_json::from_slice::<Value>(body) {
            Ok(v) => match api.schema.validate(def, &v) {
                Ok(()) => Some(v),
                Err(violation) => {
                    return Reply::fault(format!(
                        "An error occurred when deserializing the json body of a request: \
                         {violation}."
                    ));
                }
            },
            Err(e) => {
                return Reply::fault(format!(
                    "An error occurred when deserializing the json body of a request: {e}."
                ));
            }
        },
        (Some(_), true) if route.body_required => {
            return Reply::fault("The request body is empty, but the operation requires one.");
        }
        _ => None,
    };
    let param = params.values().next().map(String::as_str);
    api.vmm
        .lock()
        .await
        .dispatch(method, &route.template, param, json)
        .await
}

fn fault_text(reply: &Reply) -> String {
    reply
        .body
        .as_ref()
        .and_then(|b| b.get("fault_message"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}

fn to_response(reply: Reply) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut builder = Response::builder().status(status);
    let body = match reply.body {
        Some(v) => {
            builder = builder.header(CONTENT_TYPE, "application/json");
            Full::new(Bytes::from(v.to_string()))
        }
        None => Full::new(Bytes::new()),
    };
    builder.body(body).unwrap_or_else(|_| {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        r
    })
}
