//! SigV4 verification. The signing math is aws-sigv4's: the emulator re-signs exactly the
//! headers the request says it signed, at the request's own time, and compares signatures in
//! constant time.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    SessionTokenMode, SignableBody, SignableRequest, SigningParams, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use http::{HeaderMap, StatusCode};
use time::PrimitiveDateTime;
use time::macros::format_description;

use super::keys::{KeyInfo, Principal};
use super::protocol::AwsError;

/// How far `X-Amz-Date` may be from the emulator's clock (AWS documents 15 minutes).
pub(crate) const MAX_SKEW: Duration = Duration::from_secs(15 * 60);

/// The access key id an `Authorization` header names, without verifying anything: the event
/// log names the caller of a request whose signature failed.
pub(crate) fn claimed_access_key_id(headers: &HeaderMap) -> Option<&str> {
    let auth = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    parse_authorization(auth).ok().map(|a| a.access_key_id)
}

/// The parts of an `Authorization: AWS4-HMAC-SHA256 ...` header.
#[derive(Debug, PartialEq, Eq)]
pub struct AuthHeader<'a> {
    /// The access key id of the credential scope.
    pub access_key_id: &'a str,
    /// The scope's date, `YYYYMMDD` when well formed (checked against `X-Amz-Date` by `verify`).
    pub date: &'a str,
    /// The scope's region.
    pub region: &'a str,
    /// The scope's service (signing name).
    pub service: &'a str,
    /// `SignedHeaders`, split at `;`, none empty.
    pub signed_headers: Vec<&'a str>,
    /// 64 hexadecimal digits.
    pub signature: &'a str,
}

fn incomplete(msg: &str) -> AwsError {
    AwsError::new(StatusCode::BAD_REQUEST, "IncompleteSignature", msg)
}

fn mismatch(msg: &str) -> AwsError {
    AwsError::new(StatusCode::FORBIDDEN, "SignatureDoesNotMatch", msg)
}

fn invalid_token() -> AwsError {
    AwsError::new(
        StatusCode::FORBIDDEN,
        "InvalidClientTokenId",
        "The security token included in the request is invalid.",
    )
}

pub(crate) fn parse_authorization(value: &str) -> Result<AuthHeader<'_>, AwsError> {
    let rest = value.strip_prefix("AWS4-HMAC-SHA256 ").ok_or_else(|| {
        incomplete("Authorization header requires the AWS4-HMAC-SHA256 algorithm.")
    })?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let (Some(credential), Some(signed), Some(signature)) = (credential, signed, signature) else {
        return Err(incomplete(
            "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters.",
        ));
    };
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key_id, date, region, service, "aws4_request"] = scope[..] else {
        return Err(incomplete(
            "Credential must have the form AKID/YYYYMMDD/region/service/aws4_request.",
        ));
    };
    let signed_headers: Vec<&str> = signed.split(';').collect();
    let well_formed = !access_key_id.is_empty()
        && signed_headers.iter().all(|h| !h.is_empty())
        && signature.len() == 64
        && signature.bytes().all(|b| b.is_ascii_hexdigit());
    if !well_formed {
        return Err(incomplete("Authorization header is malformed."));
    }
    Ok(AuthHeader {
        access_key_id,
        date,
        region,
        service,
        signed_headers,
        signature,
    })
}

fn parse_amz_date(value: &str) -> Option<SystemTime> {
    let fmt = format_description!("[year][month][day]T[hour][minute][second]Z");
    let t = PrimitiveDateTime::parse(value, &fmt).ok()?.assume_utc();
    Some(t.into())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The credential scope a request must be signed for.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scope<'a> {
    /// The signing name, e.g. `redshift` or `sts`.
    pub(crate) service: &'a str,
    pub(crate) region: &'a str,
}

/// Verifies a request's signature. `path_and_query` is the request target as received; `now`
/// is the real clock, since clients sign with theirs.
pub(crate) fn verify(
    method: &str,
    path_and_query: &str,
    headers: &HeaderMap,
    body: &[u8],
    Scope { service, region }: Scope<'_>,
    now: SystemTime,
    lookup: impl FnOnce(&str) -> Option<KeyInfo>,
) -> Result<Principal, AwsError> {
    let Some(auth) = headers.get(http::header::AUTHORIZATION) else {
        return Err(AwsError::new(
            StatusCode::FORBIDDEN,
            "MissingAuthenticationToken",
            "Request is missing Authentication Token",
        ));
    };
    let auth = auth
        .to_str()
        .map_err(|_| incomplete("Authorization header is not ASCII."))?;
    let auth = parse_authorization(auth)?;
    let amz_date = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            incomplete("Authorization header requires existence of the X-Amz-Date header.")
        })?;
    let signed_at = parse_amz_date(amz_date)
        .ok_or_else(|| incomplete("X-Amz-Date must have the form YYYYMMDD'T'HHMMSS'Z'."))?;

    let key = lookup(auth.access_key_id).ok_or_else(invalid_token)?;

    if !amz_date.starts_with(auth.date) || auth.date.len() != 8 {
        return Err(mismatch(
            "Date in Credential scope does not match X-Amz-Date.",
        ));
    }
    if auth.service != service {
        return Err(mismatch(&format!(
            "Credential should be scoped to correct service: '{service}'."
        )));
    }
    if auth.region != region {
        return Err(mismatch(&format!(
            "Credential should be scoped to a valid region: '{region}'."
        )));
    }
    // Either direction counts: a clock ahead of ours is as stale as one behind.
    let skew = match now.duration_since(signed_at) {
        Ok(behind) => behind,
        Err(ahead) => ahead.duration(),
    };
    if skew > MAX_SKEW {
        return Err(AwsError::new(
            StatusCode::BAD_REQUEST,
            "RequestExpired",
            format!(
                "Request has expired. X-Amz-Date {amz_date} is more than 15 minutes from the server time."
            ),
        ));
    }

    // A key configured with a session token only accepts requests carrying that token; a
    // token on a key configured without one is unknown to the emulator.
    let token = headers
        .get("x-amz-security-token")
        .and_then(|v| v.to_str().ok());
    match (&key.session_token, token) {
        (None, None) => {}
        (Some(want), Some(got)) if constant_time_eq(want.as_bytes(), got.as_bytes()) => {}
        _ => return Err(invalid_token()),
    }

    // Re-sign over exactly the listed headers. aws-sigv4 inserts x-amz-date (from the signing
    // time) and x-amz-security-token (from the identity) itself, so those are not passed in.
    let mut signable: Vec<(&str, String)> = Vec::new();
    for name in &auth.signed_headers {
        if *name == "x-amz-date" || *name == "x-amz-security-token" {
            continue;
        }
        let values: Vec<&str> = headers
            .get_all(*name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if values.is_empty() {
            return Err(mismatch(&format!(
                "Signed header '{name}' is not in the request."
            )));
        }
        signable.push((name, values.join(",")));
    }
    let token_signed = auth.signed_headers.contains(&"x-amz-security-token");
    let identity = Credentials::new(
        auth.access_key_id,
        key.secret.clone(),
        token.map(str::to_owned),
        None,
        "emulator",
    )
    .into();
    let mut settings = SigningSettings::default();
    // The request's SignedHeaders list is the truth; nothing is excluded on our side.
    settings.excluded_headers = None;
    if token.is_some() && !token_signed {
        settings.session_token_mode = SessionTokenMode::Exclude;
    }
    let params: SigningParams<'_> = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(signed_at)
        .settings(settings)
        .build()
        .map_err(|_| mismatch("The request signature could not be computed."))?
        .into();
    let request = SignableRequest::new(
        method,
        Cow::Borrowed(path_and_query),
        signable.iter().map(|(k, v)| (*k, v.as_str())),
        SignableBody::Bytes(body),
    )
    .map_err(|_| mismatch("The request signature could not be computed."))?;
    let output = sign(request, &params)
        .map_err(|_| mismatch("The request signature could not be computed."))?;
    if !constant_time_eq(output.signature().as_bytes(), auth.signature.as_bytes()) {
        return Err(mismatch(
            "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.",
        ));
    }
    Ok(Principal {
        access_key_id: auth.access_key_id.to_owned(),
        account: key.account,
        holder: key.holder,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KeyHolder;

    const AKID: &str = "AKIAIOSFODNN7EXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    const BODY: &[u8] = b"Action=DescribeDataShares&Version=2012-12-01";

    fn key(token: Option<&str>) -> Option<KeyInfo> {
        Some(KeyInfo {
            account: "444455556666".into(),
            secret: SECRET.into(),
            session_token: token.map(str::to_owned),
            holder: KeyHolder::User {
                name: "consumer-admin".into(),
            },
        })
    }

    /// Signs a request the way the Rust SDK does (aws-sigv4, default settings) and returns its
    /// headers: the golden signature.
    fn signed_headers(
        secret: &str,
        token: Option<&str>,
        at: SystemTime,
        region: &str,
    ) -> HeaderMap {
        let identity = Credentials::new(AKID, secret, token.map(str::to_owned), None, "t").into();
        let params: SigningParams<'_> = v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name("redshift")
            .time(at)
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let base = [
            ("content-type", "application/x-www-form-urlencoded"),
            ("content-length", "44"),
            ("host", "127.0.0.1:4566"),
            ("x-amz-user-agent", "aws-sdk-rust/1.7.0"),
            ("user-agent", "whatever"),
        ];
        let req = SignableRequest::new(
            "POST",
            "http://127.0.0.1:4566/",
            base.iter().copied(),
            SignableBody::Bytes(BODY),
        )
        .unwrap();
        let out = sign(req, &params).unwrap();
        let mut headers = HeaderMap::new();
        for (k, v) in base {
            headers.insert(k, v.parse().unwrap());
        }
        for (k, v) in out.output().headers() {
            headers.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        headers
    }

    const REDSHIFT: Scope<'static> = Scope {
        service: "redshift",
        region: "us-east-1",
    };

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_000)
    }

    #[test]
    fn a_golden_signature_from_aws_sigv4_verifies() {
        let h = signed_headers(SECRET, None, now(), "us-east-1");
        let p = verify("POST", "/", &h, BODY, REDSHIFT, now(), |_| key(None)).unwrap();
        assert_eq!(p.account, "444455556666");
        assert_eq!(p.access_key_id, AKID);
    }

    #[test]
    fn a_wrong_secret_or_changed_body_does_not_match() {
        let h = signed_headers("wrong", None, now(), "us-east-1");
        let e = verify("POST", "/", &h, BODY, REDSHIFT, now(), |_| key(None)).unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.code.as_ref()),
            (403, "SignatureDoesNotMatch")
        );
        let h = signed_headers(SECRET, None, now(), "us-east-1");
        let e = verify("POST", "/", &h, b"Action=X", REDSHIFT, now(), |_| key(None)).unwrap_err();
        assert_eq!(e.code, "SignatureDoesNotMatch");
    }

    #[test]
    fn botocore_signs_fewer_headers_and_still_verifies() {
        let identity = Credentials::new(AKID, SECRET, None, None, "t").into();
        let params: SigningParams<'_> = v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name("redshift")
            .time(now())
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let base = [
            (
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8",
            ),
            ("host", "localhost:1"),
        ];
        let req =
            SignableRequest::new("POST", "/", base.iter().copied(), SignableBody::Bytes(BODY))
                .unwrap();
        let out = sign(req, &params).unwrap();
        let mut h = HeaderMap::new();
        for (k, v) in base.iter().copied().chain(out.output().headers()) {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        // Unsigned headers added after signing do not matter.
        h.insert("amz-sdk-request", "attempt=1; max=3".parse().unwrap());
        assert!(verify("POST", "/", &h, BODY, REDSHIFT, now(), |_| key(None)).is_ok());
    }

    #[test]
    fn each_rejection_has_its_aws_code() {
        let h = HeaderMap::new();
        let e = verify("POST", "/", &h, BODY, REDSHIFT, now(), |_| key(None)).unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.code.as_ref()),
            (403, "MissingAuthenticationToken")
        );

        let mut h = signed_headers(SECRET, None, now(), "us-east-1");
        h.insert(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=x".parse().unwrap(),
        );
        let e = verify("POST", "/", &h, BODY, REDSHIFT, now(), |_| key(None)).unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.code.as_ref()),
            (400, "IncompleteSignature")
        );

        let h = signed_headers(SECRET, None, now(), "us-east-1");
        let e = verify("POST", "/", &h, BODY, REDSHIFT, now(), |_| None).unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.code.as_ref()),
            (403, "InvalidClientTokenId")
        );

        let early = now() - Duration::from_secs(16 * 60);
        let e = verify("POST", "/", &h, BODY, REDSHIFT, early, |_| key(None)).unwrap_err();
        assert_eq!(e.code, "RequestExpired");
        let late = now() + Duration::from_secs(16 * 60);
        let e = verify("POST", "/", &h, BODY, REDSHIFT, late, |_| key(None)).unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.code.as_ref()),
            (400, "RequestExpired")
        );

        let h = signed_headers(SECRET, None, now(), "eu-west-1");
        let e = verify("POST", "/", &h, BODY, REDSHIFT, now(), |_| key(None)).unwrap_err();
        assert_eq!(e.code, "SignatureDoesNotMatch");
    }

    #[test]
    fn session_tokens_are_signed_and_required_when_configured() {
        let h = signed_headers(SECRET, Some("tok"), now(), "us-east-1");
        assert!(verify("POST", "/", &h, BODY, REDSHIFT, now(), |_| key(Some("tok"))).is_ok());
        let e = verify("POST", "/", &h, BODY, REDSHIFT, now(), |_| {
            key(Some("other"))
        })
        .unwrap_err();
        assert_eq!(e.code, "InvalidClientTokenId");
        let h = signed_headers(SECRET, None, now(), "us-east-1");
        let e = verify("POST", "/", &h, BODY, REDSHIFT, now(), |_| key(Some("tok"))).unwrap_err();
        assert_eq!(e.code, "InvalidClientTokenId");
    }

    #[test]
    fn the_scope_must_name_the_service_the_request_is_for() {
        let h = signed_headers(SECRET, None, now(), "us-east-1");
        let sts = Scope {
            service: "sts",
            region: "us-east-1",
        };
        let e = verify("POST", "/", &h, BODY, sts, now(), |_| key(None)).unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.message.as_str()),
            (
                403,
                "Credential should be scoped to correct service: 'sts'."
            )
        );
    }
}
