//! The gRPC services' HTTP front, the one layer under tonic's router: [`HttpGuardLayer`] stamps
//! each request's [`Arrival`] (the instant deadlines count from), refuses with HTTP 415 what is
//! not gRPC before anything is decoded, and logs and counts the requests whose body did not
//! decode, naming the method from the path ([`method_of_path`]) and the peer ([`peer_of`]).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::REQUEST_ID_HEADER;
use super::handler::is_acceptable_request_id;
use crate::accept::TlsPeer;
use crate::metrics::Metrics;

/// When a request reached the gateway's router, stamped by [`HttpGuardLayer`].
#[derive(Clone, Copy, Debug)]
pub(super) struct Arrival(pub(super) Instant);

/// The gRPC services' HTTP front: stamps each request's arrival (right inside tonic's
/// `grpc-timeout` layer), refuses what is not gRPC (HTTP 415, before anything is decoded), and
/// logs and counts requests whose body could not be decoded (the codec that refuses them knows
/// no request).
#[derive(Clone, Debug)]
pub(super) struct HttpGuardLayer {
    metrics: Arc<Metrics>,
}

impl HttpGuardLayer {
    /// A front that counts the undecodable requests it sees in `metrics`.
    pub(super) fn new(metrics: Arc<Metrics>) -> Self {
        HttpGuardLayer { metrics }
    }
}

impl<S> tower::Layer<S> for HttpGuardLayer {
    type Service = HttpGuard<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpGuard {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service made by [`HttpGuardLayer`].
#[derive(Clone, Debug)]
pub(super) struct HttpGuard<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

/// gRPC over HTTP/2 with protobuf: `application/grpc` or `application/grpc+proto`, with
/// optional parameters. (`application/grpc-web` and `+json` start alike and are not.)
fn is_grpc_content_type(value: Option<&http::HeaderValue>) -> bool {
    let Some(value) = value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let media = value.split(';').next().unwrap_or("").trim();
    media.eq_ignore_ascii_case("application/grpc")
        || media.eq_ignore_ascii_case("application/grpc+proto")
}

/// The gateway's method a request path names; anything else is "other" (bounded labels).
fn method_of_path(path: &str) -> &'static str {
    path.rsplit('/')
        .next()
        .and_then(crate::operations::method_named)
        .unwrap_or("other")
}

type HttpFuture<E> =
    std::pin::Pin<Box<dyn Future<Output = Result<http::Response<tonic::body::Body>, E>> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for HttpGuard<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = HttpFuture<S::Error>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if !is_grpc_content_type(request.headers().get(http::header::CONTENT_TYPE)) {
            tracing::info!(
                path = %request.uri().path(),
                content_type = ?request.headers().get(http::header::CONTENT_TYPE),
                "refused: not a gRPC request (HTTP 415)"
            );
            let mut response = http::Response::new(tonic::body::Body::empty());
            *response.status_mut() = http::StatusCode::UNSUPPORTED_MEDIA_TYPE;
            return Box::pin(async move { Ok(response) });
        }
        request.extensions_mut().insert(Arrival(Instant::now()));
        let method = method_of_path(request.uri().path());
        // The request id is fixed here, before decoding, so that a body that cannot be decoded
        // is logged and answered with one too; the handler keeps it (an acceptable one the
        // caller sent, else this new one).
        let request_id = match request
            .headers()
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| is_acceptable_request_id(v))
        {
            Some(id) => id.to_owned(),
            None => {
                let id = uuid::Uuid::new_v4().to_string();
                if let Ok(value) = http::HeaderValue::from_str(&id) {
                    request.headers_mut().insert(REQUEST_ID_HEADER, value);
                }
                id
            }
        };
        let peer = peer_of(&request).map_or_else(|| "unknown".to_owned(), |p| p.to_string());
        let metrics = self.metrics.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            if response
                .headers_mut()
                .remove(crate::status::UNDECODABLE_MARK)
                .is_some()
            {
                tracing::info!(
                    method,
                    %peer,
                    %request_id,
                    "refused: the request body is not a valid message (INVALID_ARGUMENT)"
                );
                if let Ok(value) = http::HeaderValue::from_str(&request_id) {
                    response.headers_mut().insert(REQUEST_ID_HEADER, value);
                }
                metrics.call_answered(method, tonic::Code::InvalidArgument, None);
            }
            Ok(response)
        })
    }
}

/// The caller's address, from the connection info tonic puts in the request (TCP or TLS).
fn peer_of<B>(request: &http::Request<B>) -> Option<SocketAddr> {
    use tonic::transport::server::TcpConnectInfo;
    let extensions = request.extensions();
    extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| extensions.get::<TlsPeer>().and_then(|tls| tls.remote_addr))
}
