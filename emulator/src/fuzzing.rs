//! The parsers that read what a client sends before anything is verified, exposed for the fuzz
//! targets in `fuzz/` and their replay test (`tests/fuzz_replay.rs`). Nothing else uses them:
//! the emulator's API is the listeners.

use std::time::SystemTime;

use http::HeaderMap;

use crate::keys::{KeyHolder, KeyInfo};
pub use crate::protocol::QueryRequest;
pub use crate::sigv4::AuthHeader;
use crate::sigv4::{self, Scope};

/// Parses an `Authorization: AWS4-HMAC-SHA256 ...` value as the API listener does; the error is
/// the AWS error code the listener answers with.
pub fn parse_authorization(value: &str) -> Result<AuthHeader<'_>, String> {
    sigv4::parse_authorization(value).map_err(|err| err.code.into_owned())
}

/// The access key id a request's `Authorization` header claims, unverified (what the event log
/// names for a request whose signature failed).
pub fn claimed_access_key_id(headers: &HeaderMap) -> Option<&str> {
    sigv4::claimed_access_key_id(headers)
}

/// The one long-term key [`verify`] knows.
#[derive(Clone, Copy, Debug)]
pub struct KnownKey<'a> {
    /// The access key id.
    pub access_key_id: &'a str,
    /// Its secret.
    pub secret: &'a str,
    /// The account it acts as.
    pub account: &'a str,
}

/// Verifies a Redshift request's signature as the API listener does, when `key` is the only
/// key the emulator knows: the account that signed, or the AWS error code of the refusal.
pub fn verify(
    method: &str,
    path_and_query: &str,
    headers: &HeaderMap,
    body: &[u8],
    region: &str,
    now: SystemTime,
    key: KnownKey<'_>,
) -> Result<String, String> {
    let scope = Scope {
        service: "redshift",
        region,
    };
    let lookup = |id: &str| {
        (id == key.access_key_id).then(|| KeyInfo {
            account: key.account.to_owned(),
            secret: key.secret.to_owned(),
            session_token: None,
            holder: KeyHolder::User {
                name: "fuzz".to_owned(),
            },
        })
    };
    sigv4::verify(method, path_and_query, headers, body, scope, now, lookup)
        .map(|principal| principal.account)
        .map_err(|err| err.code.into_owned())
}
