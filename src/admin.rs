//! The admin HTTP listener: Prometheus `/metrics`, `/livez` (the process answers) and `/readyz`
//! (the same verdict as `grpc.health.v1`: serving, audit trail writable, not shutting down; its
//! body also reports what does not make the gateway unready: a refused policy reload, an
//! unreachable approvals store, S3 refusing the trail's uploads).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;

/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// The longest an admin connection stays open.
const CONNECTION_LIFETIME: std::time::Duration = std::time::Duration::from_secs(60);
/// How long to wait after an accept error before accepting again.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::metrics::Metrics;

fn text(
    status: StatusCode,
    body: impl Into<Bytes>,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

fn route(
    request: &Request<Incoming>,
    metrics: &Metrics,
    ready: &watch::Receiver<bool>,
) -> Response<Full<Bytes>> {
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => text(
            StatusCode::OK,
            metrics.render(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        (&Method::GET, "/livez") => text(StatusCode::OK, "ok\n", "text/plain"),
        (&Method::GET, "/readyz") => readyz(*ready.borrow(), metrics),
        _ => text(StatusCode::NOT_FOUND, "not found\n", "text/plain"),
    }
}

/// 200 while serving, else 503. The body's first line is the verdict; the lines after it are what
/// an operator should see that does not change it (a refused policy reload: the previous set
/// still serves; an unreachable approvals store: ungated calls are still served).
fn readyz(serving: bool, metrics: &Metrics) -> Response<Full<Bytes>> {
    let (status, mut body) = if serving {
        (StatusCode::OK, String::from("ok\n"))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            String::from("not serving\n"),
        )
    };
    for note in metrics.readiness_notes() {
        body.push_str(&note);
        body.push('\n');
    }
    text(status, body, "text/plain")
}

/// Serves the admin endpoints until `shutdown` resolves. `ready` is the gateway's serving status.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    ready: watch::Receiver<bool>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of file descriptors (EMFILE) lasts: retrying at once would spin a core.
                metrics.accept_failed("admin");
                tracing::warn!(error = %err, "admin: cannot accept a connection; backing off");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let response = route(&request, &metrics, &ready);
                async move { Ok::<_, Infallible>(response) }
            });
            // A client that never finishes its request headers does not hold a connection.
            let connection = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            // Scrapes and probes are quick; a connection kept longer is closed.
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
        });
    }
}
