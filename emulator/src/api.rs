//! The API listener, Redshift, STS and CloudTrail on one port: one HTTP request in, through
//! counters, faults, SigV4, the session's expiry and the operation, one response out (Query
//! protocol, or JSON 1.1 for CloudTrail), and one event in the log (none for CloudTrail's own
//! operations).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use super::Shared;
use super::cloudtrail;
use super::events::{self, Event, UserIdentity};
use super::faults::{FaultKind, parse_sdk_request};
use super::keys::{KeyHolder, KeyInfo, Principal, Session};
use super::ops;
use super::protocol::{AwsError, QueryRequest, Service, error_body, success_body};
use super::sigv4::{self, Scope};
use super::sts::{self, AssumeRoleInput};

/// The largest request body accepted. Datashare requests are a few hundred bytes.
pub(crate) const MAX_BODY: usize = 1024 * 1024;

/// The highest `amz-sdk-request` attempt number counted.
const MAX_RECORDED_ATTEMPT: u32 = 100;

/// Returned to hyper to close the connection without a response.
#[derive(Debug, thiserror::Error)]
#[error("connection closed on purpose")]
pub(crate) struct CloseConnection;

fn respond(
    service: Service,
    status: StatusCode,
    request_id: &str,
    body: String,
) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(body)));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(service.content_type()),
    );
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-amzn-RequestId", v);
    }
    res
}

fn error(service: Service, err: &AwsError, request_id: &str) -> Response<Full<Bytes>> {
    respond(
        service,
        err.status,
        request_id,
        error_body(service, err, request_id),
    )
}

/// The Action's name when the emulator implements it: the eight Redshift operations and
/// AssumeRole. Counters, faults and events are keyed by these only ("-" for anything else), so
/// random Action values cannot grow them without bound.
fn known_operation(action: &str) -> Option<&'static str> {
    ops::known(action).or((action == sts::ASSUME_ROLE).then_some(sts::ASSUME_ROLE))
}

/// How a request ended, and what the event log needs to know about it.
#[derive(Debug)]
struct Outcome {
    response: Response<Full<Bytes>>,
    /// The caller, when SigV4 verified it.
    principal: Option<Principal>,
    /// The AWS error answered, if any.
    error: Option<AwsError>,
    /// AssumeRole's new session.
    session: Option<Arc<Session>>,
    /// False for answers a proxy in front of the service would give (a bare 429, a body that
    /// is not XML): the service never saw the request, so it leaves no event.
    recorded: bool,
}

impl Outcome {
    fn failed(service: Service, err: AwsError, request_id: &str) -> Outcome {
        Outcome {
            response: error(service, &err, request_id),
            principal: None,
            error: Some(err),
            session: None,
            recorded: true,
        }
    }

    fn by(mut self, principal: &Principal) -> Outcome {
        self.principal = Some(principal.clone());
        self
    }
}

/// Handles one API request from `peer`.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    peer: SocketAddr,
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
        return Ok(error(Service::Redshift, &too_large, &request_id));
    }
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Ok(error(Service::Redshift, &too_large, &request_id));
        }
        Err(_) => return Err(CloseConnection),
    };

    // CloudTrail's JSON 1.1 names its operation in X-Amz-Target; the Query services in the body.
    let cloudtrail_target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(cloudtrail::operation_in_target)
        .map(str::to_owned);
    let query = if parts.method == http::Method::POST && cloudtrail_target.is_none() {
        QueryRequest::parse(&body)
    } else {
        // Only POST is modeled (every operation: "http": {"method": "POST", "requestUri": "/"});
        // other methods are read as having no Action.
        QueryRequest::default()
    };
    let service = match cloudtrail_target {
        Some(_) => Service::CloudTrail,
        None => Service::of(&query),
    };
    let operation = match &cloudtrail_target {
        Some(target) => cloudtrail::known(target),
        None => query.action.as_deref().and_then(known_operation),
    }
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
    if decision.hold {
        tracing::info!(%request_id, action = %operation, "held until released");
        shared.holds.hold().await;
    }
    let outcome = match decision.fault {
        Some(kind) => {
            shared.counters.update(&operation, |c| {
                *c.faults.entry(fault_name(kind)).or_default() += 1;
            });
            match injected(
                service,
                kind,
                decision.error.as_ref(),
                &operation,
                &request_id,
            ) {
                Some(outcome) => outcome,
                None => {
                    tracing::info!(%request_id, action = %operation, ?attempt, ?max_attempts, fault = ?kind, "closing connection without a response");
                    return Err(CloseConnection);
                }
            }
        }
        None => authenticated(
            &shared,
            service,
            &parts,
            &body,
            &query,
            &operation,
            &request_id,
        ),
    };
    shared.counters.update(&operation, |c| c.answered += 1);
    tracing::info!(
        %request_id,
        action = %operation,
        status = outcome.response.status().as_u16(),
        account = outcome.principal.as_ref().map_or("-", |p| p.account.as_str()),
        ?attempt,
        ?max_attempts,
        "request"
    );
    // CloudTrail's own operations are not in the log (assumption: CloudTrail records
    // LookupEvents as a management event; here it would change the answers it pages through).
    if outcome.recorded && operation != "-" && service != Service::CloudTrail {
        let request = Arrived {
            service,
            operation: &operation,
            query: &query,
            headers: &parts.headers,
            peer,
            request_id: &request_id,
        };
        record(&shared, &request, &outcome);
    }
    Ok(outcome.response)
}

/// What the event log takes from the request itself.
#[derive(Debug)]
struct Arrived<'a> {
    service: Service,
    operation: &'a str,
    query: &'a QueryRequest,
    headers: &'a http::HeaderMap,
    peer: SocketAddr,
    request_id: &'a str,
}

/// Adds the request to the event log when someone can be named as its caller: the verified
/// principal, or else the known key the `Authorization` header claims (a failed signature, an
/// injected fault). Requests with no key or an unknown one leave no event.
fn record(shared: &Shared, request: &Arrived<'_>, outcome: &Outcome) {
    let Arrived {
        service,
        operation,
        query,
        headers,
        peer,
        request_id,
    } = *request;
    let (access_key_id, account, holder) = match &outcome.principal {
        Some(p) => (p.access_key_id.clone(), p.account.clone(), p.holder.clone()),
        None => {
            let Some((akid, key)) = sigv4::claimed_access_key_id(headers)
                .and_then(|akid| Some((akid.to_owned(), shared.keys.lookup(akid)?)))
            else {
                return;
            };
            let KeyInfo {
                account, holder, ..
            } = key;
            (akid, account, holder)
        }
    };
    let caller_arn = shared.sts.caller_arn(&account, &holder);
    // Delivered to the account the call acts as; for AssumeRole, to the role's account (the
    // resource owner), which CloudTrail also delivers to (assumption: one recipient only).
    let recipient = outcome
        .session
        .as_ref()
        .map_or_else(|| account.clone(), |s| s.account.clone());
    let user_identity = UserIdentity::new(&access_key_id, &account, &holder, caller_arn);
    let now = shared.clock.now();
    let event = Event {
        event_version: "1.08",
        user_identity,
        event_time: events::rfc3339(now),
        event_source: service.event_source(),
        event_name: operation.to_owned(),
        aws_region: shared.store.region().to_owned(),
        source_ip_address: peer.ip().to_string(),
        user_agent: headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        error_code: outcome.error.as_ref().map(|e| e.code.to_string()),
        error_message: outcome.error.as_ref().map(|e| e.message.clone()),
        request_parameters: events::request_parameters(service, query),
        response_elements: outcome
            .session
            .as_deref()
            .map_or(serde_json::Value::Null, events::assume_role_response),
        // CloudTrail's requestID is the x-amzn-RequestId the SDK saw (assumption), which is
        // how the gateway's aws_request_id finds its event.
        request_id: request_id.to_owned(),
        event_id: uuid::Uuid::new_v4().to_string(),
        read_only: operation.starts_with("Describe") || operation == sts::ASSUME_ROLE,
        event_type: "AwsApiCall",
        management_event: true,
        recipient_account_id: recipient,
        event_category: "Management",
    };
    shared.events.record(event, now);
}

fn fault_name(kind: FaultKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The answer to an injected fault, or `None` to close the connection.
fn injected(
    service: Service,
    kind: FaultKind,
    error_rule: Option<&(u16, String)>,
    operation: &str,
    request_id: &str,
) -> Option<Outcome> {
    let err = |status, code: &'static str, msg: &str| {
        Some(Outcome::failed(
            service,
            AwsError::new(status, code, msg),
            request_id,
        ))
    };
    let unrecorded = |response| {
        Some(Outcome {
            response,
            principal: None,
            error: None,
            session: None,
            recorded: false,
        })
    };
    match kind {
        // The usual awsQuery throttle, and CloudTrail's; in both SDKs' throttling lists
        // (aws-runtime's `THROTTLING_ERRORS`, botocore's `_THROTTLED_ERROR_CODES`).
        FaultKind::Throttling if service == Service::CloudTrail => err(
            StatusCode::BAD_REQUEST,
            "ThrottlingException",
            "Rate exceeded",
        ),
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
        // the status alone, the Rust SDK does not retry it at all (429 is not among the
        // statuses its `HttpStatusCodeClassifier` retries). The body is an
        // HTML page rather than empty because botocore cannot parse an empty 4xx body.
        FaultKind::Bare429 => unrecorded(respond(
            service,
            StatusCode::TOO_MANY_REQUESTS,
            request_id,
            "<html><body><h1>429 Too Many Requests</h1></body></html>".to_owned(),
        )),
        // Not XML at all: the SDK's parser is lenient about truncation, never about the root.
        FaultKind::MalformedBody => unrecorded(respond(
            service,
            StatusCode::OK,
            request_id,
            format!("this is not XML: {operation} <<<"),
        )),
        FaultKind::Error => {
            let (status, code) = error_rule?;
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST);
            Some(Outcome::failed(
                service,
                AwsError::new(
                    status,
                    code.clone(),
                    "Injected by the emulator's fault rules.",
                ),
                request_id,
            ))
        }
        FaultKind::CloseConnection => None,
        // Latency and holds alone never become the outcome (see `Faults::decide`).
        FaultKind::Latency | FaultKind::Hold => None,
    }
}

/// SigV4, then the session's expiry, then Version/Action checks, then the operation.
fn authenticated(
    shared: &Shared,
    service: Service,
    parts: &http::request::Parts,
    body: &[u8],
    query: &QueryRequest,
    operation: &str,
    request_id: &str,
) -> Outcome {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let scope = Scope {
        service: service.signing_name(),
        region: shared.store.region(),
    };
    // The 15-minute window is checked against the real clock: clients sign with theirs, and
    // moving the emulator's clock must not make every request stale.
    let principal = match sigv4::verify(
        parts.method.as_str(),
        path,
        &parts.headers,
        body,
        scope,
        SystemTime::now(),
        |akid| shared.keys.lookup(akid),
    ) {
        Ok(p) => p,
        Err(e) => return Outcome::failed(service, e, request_id),
    };
    // After the signature (assumption: AWS's order is not documented), on the emulator's
    // clock so `POST /clock` can expire a session. 400 as the Query services answer it.
    if let KeyHolder::Session(s) = &principal.holder
        && shared.clock.now() >= s.expiration
    {
        let e = AwsError::new(
            StatusCode::BAD_REQUEST,
            "ExpiredToken",
            "The security token included in the request is expired",
        );
        return Outcome::failed(service, e, request_id).by(&principal);
    }
    if service == Service::CloudTrail {
        return cloudtrail_call(shared, operation, body, request_id, principal);
    }
    let Some(action) = &query.action else {
        let e = AwsError::new(
            StatusCode::BAD_REQUEST,
            "MissingAction",
            "The request must contain the parameter Action.",
        );
        return Outcome::failed(service, e, request_id).by(&principal);
    };
    match query.version.as_deref() {
        None => {
            return Outcome::failed(service, AwsError::missing_parameter("Version"), request_id)
                .by(&principal);
        }
        // A Version the service does not have: AWS answers InvalidAction "Could not find
        // operation X for version Y" (assumption for Redshift specifically).
        Some(v) if v != service.api_version() => {
            let e = AwsError::new(
                StatusCode::BAD_REQUEST,
                "InvalidAction",
                format!("Could not find operation {action} for version {v}"),
            );
            return Outcome::failed(service, e, request_id).by(&principal);
        }
        Some(_) => {}
    }
    let op = match service {
        Service::Sts => (action == sts::ASSUME_ROLE).then_some(sts::ASSUME_ROLE),
        Service::Redshift => ops::known(action),
        // Answered by `cloudtrail_call` above.
        Service::CloudTrail => None,
    };
    let Some(op) = op else {
        let e = AwsError::new(
            StatusCode::BAD_REQUEST,
            "InvalidAction",
            format!(
                "Could not find operation {action} for version {}",
                service.api_version()
            ),
        );
        return Outcome::failed(service, e, request_id).by(&principal);
    };
    shared.counters.update(operation, |c| c.forwarded += 1);
    if service == Service::Redshift {
        return match ops::call(&shared.store, &principal.account, op, query) {
            Ok(result) => Outcome {
                response: respond(
                    service,
                    StatusCode::OK,
                    request_id,
                    success_body(service, op, &result, request_id),
                ),
                principal: Some(principal),
                error: None,
                session: None,
                recorded: true,
            },
            Err(e) => Outcome::failed(service, e, request_id).by(&principal),
        };
    }
    let result = AssumeRoleInput::parse(query).and_then(|input| {
        shared
            .sts
            .assume_role(&shared.keys, &principal, &input, shared.clock.now())
    });
    match result {
        Ok(session) => Outcome {
            response: respond(
                service,
                StatusCode::OK,
                request_id,
                success_body(service, op, &sts::result_xml(&session), request_id),
            ),
            principal: Some(principal),
            error: None,
            session: Some(session),
            recorded: true,
        },
        Err(e) => Outcome::failed(service, e, request_id).by(&principal),
    }
}

/// A CloudTrail operation for an authenticated caller; an unknown one is JSON 1.1's
/// `UnknownOperationException` (assumption).
fn cloudtrail_call(
    shared: &Shared,
    operation: &str,
    body: &[u8],
    request_id: &str,
    principal: Principal,
) -> Outcome {
    let service = Service::CloudTrail;
    if operation == "-" {
        let e = AwsError::new(
            StatusCode::BAD_REQUEST,
            "UnknownOperationException",
            "The emulator implements LookupEvents and ListPublicKeys only.",
        );
        return Outcome::failed(service, e, request_id).by(&principal);
    }
    shared.counters.update(operation, |c| c.forwarded += 1);
    match cloudtrail::call(shared, &principal, operation, body) {
        Ok(answer) => Outcome {
            response: respond(service, StatusCode::OK, request_id, answer.to_string()),
            principal: Some(principal),
            error: None,
            session: None,
            recorded: true,
        },
        Err(e) => Outcome::failed(service, e, request_id).by(&principal),
    }
}
