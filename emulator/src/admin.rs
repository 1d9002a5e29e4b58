//! The admin API (JSON over HTTP, its own port): counters, faults and held calls, state,
//! seeding, events, the trail (deliver, hold, drop, the digest key), the clock, reset.
//! Every endpoint is documented, with curl examples, in `docs/emulator.md`.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::Shared;
use super::api::MAX_BODY;
use super::events::DropError;
use super::faults::FaultSpec;
use super::fixtures::{Fixtures, GrantFixture};
use super::protocol::format_timestamp;

fn json_response(status: StatusCode, value: &Value) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(value.to_string())));
    *res.status_mut() = status;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

fn bad_request(msg: impl std::fmt::Display) -> Response<Full<Bytes>> {
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({ "error": msg.to_string() }),
    )
}

async fn read_json<T: DeserializeOwned>(body: Incoming) -> Result<T, Response<Full<Bytes>>> {
    let bytes = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|e| bad_request(format!("cannot read body: {e}")))?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| bad_request(format!("invalid JSON: {e}")))
}

/// `POST /grants`: one grant on an existing datashare.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantSeed {
    /// The datashare ARN.
    datashare_arn: String,
    /// The grant, as in a fixtures file.
    #[serde(flatten)]
    grant: GrantFixture,
}

/// `POST /clock`: move the emulator's clock (back when negative).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockAdvance {
    /// Seconds to add to the current offset (negative: back).
    advance_secs: i64,
}

/// `POST /trail/hold`: hold deliveries until released, or for `secs`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrailHold {
    /// Seconds to hold for (more than 0, at most a day); absent: until `POST /trail/release`.
    #[serde(default)]
    secs: Option<f64>,
}

/// The longest timed hold, a day: a test holds for seconds.
const MAX_HOLD_SECS: f64 = 86_400.0;

/// `POST /trail/drop`: exactly one of the two ids.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TrailDrop {
    #[serde(default)]
    event_id: Option<String>,
    /// The `x-amzn-RequestId` the caller saw.
    #[serde(default)]
    request_id: Option<String>,
}

/// An empty body reads as `T::default()`.
async fn read_optional_json<T: DeserializeOwned + Default>(
    body: Incoming,
) -> Result<T, Response<Full<Bytes>>> {
    let bytes = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|e| bad_request(format!("cannot read body: {e}")))?
        .to_bytes();
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes).map_err(|e| bad_request(format!("invalid JSON: {e}")))
}

fn no_trail() -> Response<Full<Bytes>> {
    bad_request("no trail: start the emulator with --trail-s3-endpoint and --trail-bucket")
}

/// Handles one admin request.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let res = match (method.clone(), path.as_str()) {
        (Method::GET, "/health") => json_response(StatusCode::OK, &json!({ "status": "ok" })),
        (Method::GET, "/counters") => counters(&shared),
        (Method::POST, "/counters/reset") => {
            shared.counters.reset();
            counters(&shared)
        }
        (Method::GET, "/faults") => faults(&shared),
        (Method::POST, "/faults") => match read_json::<FaultSpec>(req.into_body()).await {
            Ok(spec) => match spec.validate() {
                Ok(()) => {
                    shared.faults.add(spec);
                    faults(&shared)
                }
                Err(e) => bad_request(e),
            },
            Err(res) => res,
        },
        (Method::POST, "/faults/release") => {
            let released = shared.holds.release();
            json_response(StatusCode::OK, &json!({ "released": released }))
        }
        (Method::DELETE, "/faults") => {
            shared.faults.clear();
            shared.holds.release();
            faults(&shared)
        }
        (Method::GET, "/state") => json_response(StatusCode::OK, &shared.snapshot()),
        (Method::POST, "/seed") => match read_json::<Fixtures>(req.into_body()).await {
            Ok(f) => match shared.seed(&f) {
                Ok(()) => json_response(StatusCode::OK, &shared.snapshot()),
                Err(e) => bad_request(e),
            },
            Err(res) => res,
        },
        (Method::POST, "/grants") => match read_json::<GrantSeed>(req.into_body()).await {
            Ok(g) => match shared.store.seed_grant(&g.datashare_arn, &g.grant) {
                Ok(()) => json_response(StatusCode::OK, &shared.snapshot()),
                Err(e) => bad_request(e),
            },
            Err(res) => res,
        },
        (Method::GET, "/events") => json_response(StatusCode::OK, &shared.events.to_json()),
        (Method::POST, "/events/reset") => {
            shared.events.clear();
            json_response(StatusCode::OK, &shared.events.to_json())
        }
        (Method::GET, "/trail") => match &shared.trail {
            Some(trail) => json_response(StatusCode::OK, &trail.status(&shared.events).await),
            None => no_trail(),
        },
        (Method::POST, "/trail/flush") => match &shared.trail {
            Some(trail) => {
                let delivered = trail
                    .deliver(&shared.events, &shared.clock, &shared.signing_key)
                    .await;
                json_response(StatusCode::OK, &delivered.to_json())
            }
            None => no_trail(),
        },
        (Method::POST, "/trail/hold") => match (
            &shared.trail,
            read_optional_json::<TrailHold>(req.into_body()).await,
        ) {
            (_, Err(res)) => res,
            (None, Ok(_)) => no_trail(),
            (Some(_), Ok(TrailHold { secs: Some(s) })) if !(s > 0.0 && s <= MAX_HOLD_SECS) => {
                bad_request(format!(
                    "secs = {s}: must be more than 0 and at most {MAX_HOLD_SECS}"
                ))
            }
            (Some(trail), Ok(hold)) => {
                trail.hold(hold.secs);
                json_response(StatusCode::OK, &trail.status(&shared.events).await)
            }
        },
        (Method::POST, "/trail/release") => match &shared.trail {
            Some(trail) => {
                trail.release();
                let delivered = trail
                    .deliver(&shared.events, &shared.clock, &shared.signing_key)
                    .await;
                json_response(StatusCode::OK, &delivered.to_json())
            }
            None => no_trail(),
        },
        (Method::POST, "/trail/drop") => match read_json::<TrailDrop>(req.into_body()).await {
            Ok(TrailDrop {
                event_id: Some(id),
                request_id: None,
            })
            | Ok(TrailDrop {
                event_id: None,
                request_id: Some(id),
            }) => match shared.events.drop_event(&id) {
                Ok(n) => json_response(StatusCode::OK, &json!({ "dropped": n })),
                Err(e @ DropError::Unknown(_)) => {
                    json_response(StatusCode::NOT_FOUND, &json!({ "error": e.to_string() }))
                }
                Err(e @ DropError::AlreadyDelivered(_)) => {
                    json_response(StatusCode::CONFLICT, &json!({ "error": e.to_string() }))
                }
            },
            Ok(_) => bad_request("give exactly one of event_id and request_id"),
            Err(res) => res,
        },
        (Method::GET, "/trail/public-key") => public_key(&shared),
        (Method::GET, "/clock") => clock(&shared),
        (Method::POST, "/clock") => match read_json::<ClockAdvance>(req.into_body()).await {
            Ok(c) => match shared.clock.advance(c.advance_secs) {
                Ok(_) => clock(&shared),
                Err(e) => bad_request(e),
            },
            Err(res) => res,
        },
        (Method::POST, "/reset") => match shared.reset() {
            Ok(()) => json_response(StatusCode::OK, &shared.snapshot()),
            Err(e) => json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({ "error": e.to_string() }),
            ),
        },
        _ => json_response(
            StatusCode::NOT_FOUND,
            &json!({ "error": format!("no admin endpoint {method} {path}") }),
        ),
    };
    tracing::debug!(%method, %path, status = res.status().as_u16(), "admin request");
    Ok(res)
}

fn counters(shared: &Shared) -> Response<Full<Bytes>> {
    json_response(
        StatusCode::OK,
        &json!({ "operations": shared.counters.snapshot() }),
    )
}

/// `{"now": RFC 3339, "offset_secs": N}`: the emulator's time and how far ahead of the real
/// clock it is.
fn clock(shared: &Shared) -> Response<Full<Bytes>> {
    json_response(
        StatusCode::OK,
        &json!({
            "now": super::protocol::format_timestamp(shared.clock.now()),
            "offset_secs": shared.clock.offset_secs(),
        }),
    )
}

/// `{"faults": [FaultSpec, ...], "held": N}`: the rules, and how many calls a hold rule is
/// holding now.
fn faults(shared: &Shared) -> Response<Full<Bytes>> {
    json_response(
        StatusCode::OK,
        &json!({ "faults": shared.faults.list(), "held": shared.holds.held() }),
    )
}

/// The digest signing key's public half, as `ListPublicKeys` publishes it.
fn public_key(shared: &Shared) -> Response<Full<Bytes>> {
    match shared.signing_key.get(shared.clock.now()) {
        Ok(key) => json_response(
            StatusCode::OK,
            &json!({
                "fingerprint": key.fingerprint(),
                "public_key": key.public_key_base64(),
                "validity_start": format_timestamp(key.valid_from),
                "validity_end": format_timestamp(key.valid_to),
                "signature_algorithm": super::signing::SIGNATURE_ALGORITHM,
            }),
        ),
        Err(e) => json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({ "error": e.to_string() }),
        ),
    }
}
