//! The Redshift API listener: one HTTP request in, through counters, faults, SigV4 and the
//! operation, one Query-protocol response out.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use super::Shared;
use super::faults::{FaultKind, parse_sdk_request};
use super::ops;
use super::protocol::{API_VERSION, AwsError, QueryRequest, error_body, success_body};
use super::sigv4;

/// The largest request body accepted. Datashare requests are a few hundred bytes.
pub(crate) const MAX_BODY: usize = 1024 * 1024;

/// The highest `amz-sdk-request` attempt number counted.
const MAX_RECORDED_ATTEMPT: u32 = 100;

/// Returned to hyper to close the connection without a response.
#[derive(Debug, thiserror::Error)]
#[error("connection closed on purpose")]
pub(crate) struct CloseConnection;

fn respond(status: StatusCode, request_id: &str, body: String) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/xml"),
    );
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-amzn-RequestId", v);
    }
    res
}

fn error(err: &AwsError, request_id: &str) -> Response<Full<Bytes>> {
    respond(err.status, request_id, error_body(err, request_id))
}

/// Handles one API request.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, CloseConnection> {
    let request_id = uuid::Uuid::new_v4().to_string();
    let (parts, body) = req.into_parts();

    // Bounded read: a declared or actual body over MAX_BODY is refused, never buffered.
    // 413 `RequestEntityTooLarge` is an assumption (AWS's exact answer is not documented).
    let too_large = AwsError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "RequestEntityTooLarge",
        format!("Request body must be at most {MAX_BODY} bytes."),
    );
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Ok(error(&too_large, &request_id));
    }
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Ok(error(&too_large, &request_id));
        }
        Err(_) => return Err(CloseConnection),
    };

    let query = if parts.method == http::Method::POST {
        QueryRequest::parse(&body)
    } else {
        // Only POST is modeled (every operation: "http": {"method": "POST", "requestUri": "/"});
        // other methods are read as having no Action.
        QueryRequest::default()
    };
    // Counters and faults are keyed by the eight known operations only ("-" for anything
    // else), so random Action values cannot grow the counter map without bound.
    let operation = query
        .action
        .as_deref()
        .and_then(ops::known)
        .unwrap_or("-")
        .to_owned();
    let (attempt, max_attempts) = parts
        .headers
        .get("amz-sdk-request")
        .and_then(|v| v.to_str().ok())
        .map(parse_sdk_request)
        .unwrap_or_default();
    shared.counters.update(&operation, |c| {
        c.received += 1;
        // SDKs make a handful of attempts; a larger number is noise and is not recorded, which
        // keeps the map bounded.
        if let Some(a) = attempt.filter(|a| (1..=MAX_RECORDED_ATTEMPT).contains(a)) {
            *c.attempts.entry(a).or_default() += 1;
        }
    });

    let decision = shared.faults.decide(&operation);
    if !decision.delay.is_zero() {
        tokio::time::sleep(decision.delay).await;
    }
    let (status, response, account) = match decision.fault {
        Some(kind) => {
            shared.counters.update(&operation, |c| {
                *c.faults.entry(fault_name(kind)).or_default() += 1;
            });
            match injected(kind, decision.error.as_ref(), &operation, &request_id) {
                Some(res) => (res.status(), res, None),
                None => {
                    tracing::info!(%request_id, action = %operation, ?attempt, ?max_attempts, fault = ?kind, "closing connection without a response");
                    return Err(CloseConnection);
                }
            }
        }
        None => {
            let (res, account) =
                authenticated(&shared, &parts, &body, &query, &operation, &request_id);
            (res.status(), res, account)
        }
    };
    shared.counters.update(&operation, |c| c.answered += 1);
    tracing::info!(
        %request_id,
        action = %operation,
        status = status.as_u16(),
        account = account.as_deref().unwrap_or("-"),
        ?attempt,
        ?max_attempts,
        "request"
    );
    Ok(response)
}

fn fault_name(kind: FaultKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The response for an injected fault, or `None` to close the connection.
fn injected(
    kind: FaultKind,
    error_rule: Option<&(u16, String)>,
    operation: &str,
    request_id: &str,
) -> Option<Response<Full<Bytes>>> {
    let err = |status, code: &'static str, msg: &str| {
        Some(error(&AwsError::new(status, code, msg), request_id))
    };
    match kind {
        // The usual awsQuery throttle; in both SDKs' throttling lists (api doc §5).
        FaultKind::Throttling => err(StatusCode::BAD_REQUEST, "Throttling", "Rate exceeded"),
        FaultKind::InternalFailure => err(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalFailure",
            "The request processing has failed because of an unknown error, exception or failure.",
        ),
        FaultKind::ServiceUnavailable => err(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "The request has failed due to a temporary failure of the server.",
        ),
        // No AWS error code, as a proxy or load balancer would answer: botocore retries it on
        // the status alone, the Rust SDK does not retry it at all (api doc §5). The body is an
        // HTML page rather than empty because botocore cannot parse an empty 4xx body.
        FaultKind::Bare429 => Some(respond(
            StatusCode::TOO_MANY_REQUESTS,
            request_id,
            "<html><body><h1>429 Too Many Requests</h1></body></html>".to_owned(),
        )),
        // Not XML at all: the SDK's parser is lenient about truncation, never about the root.
        FaultKind::MalformedBody => Some(respond(
            StatusCode::OK,
            request_id,
            format!("this is not XML: {operation} <<<"),
        )),
        FaultKind::Error => {
            let (status, code) = error_rule?;
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST);
            Some(error(
                &AwsError::new(
                    status,
                    code.clone(),
                    "Injected by the emulator's fault rules.",
                ),
                request_id,
            ))
        }
        FaultKind::CloseConnection => None,
        // Latency alone never becomes the outcome (see `Faults::decide`).
        FaultKind::Latency => None,
    }
}

/// SigV4, then Version/Action checks, then the operation.
fn authenticated(
    shared: &Shared,
    parts: &http::request::Parts,
    body: &[u8],
    query: &QueryRequest,
    operation: &str,
    request_id: &str,
) -> (Response<Full<Bytes>>, Option<String>) {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let principal = match sigv4::verify(
        parts.method.as_str(),
        path,
        &parts.headers,
        body,
        shared.store.region(),
        SystemTime::now(),
        |akid| shared.store.key(akid),
    ) {
        Ok(p) => p,
        Err(e) => return (error(&e, request_id), None),
    };
    let account = Some(principal.account.clone());
    let Some(action) = &query.action else {
        let e = AwsError::new(
            StatusCode::BAD_REQUEST,
            "MissingAction",
            "The request must contain the parameter Action.",
        );
        return (error(&e, request_id), account);
    };
    match query.version.as_deref() {
        None => {
            return (
                error(&AwsError::missing_parameter("Version"), request_id),
                account,
            );
        }
        // A Version the service does not have: AWS answers InvalidAction "Could not find
        // operation X for version Y" (assumption for Redshift specifically).
        Some(v) if v != API_VERSION => {
            let e = AwsError::new(
                StatusCode::BAD_REQUEST,
                "InvalidAction",
                format!("Could not find operation {action} for version {v}"),
            );
            return (error(&e, request_id), account);
        }
        Some(_) => {}
    }
    let Some(op) = ops::known(action) else {
        return (error(&ops::invalid_action(action), request_id), account);
    };
    shared.counters.update(operation, |c| c.forwarded += 1);
    let res = match ops::call(&shared.store, &principal.account, op, query) {
        Ok(result) => respond(
            StatusCode::OK,
            request_id,
            success_body(op, &result, request_id),
        ),
        Err(e) => error(&e, request_id),
    };
    (res, account)
}
