//! Page tokens for `ListConsumerDataShares` (AIP-158): opaque to callers, bound to the request's
//! filters, and checked so that an altered or foreign token is `INVALID_ARGUMENT`.
//!
//! A token carries Redshift's `Marker` and a fingerprint of the filters it was issued for, with
//! a checksum over both. The checksum catches corrupted, truncated and hand-edited tokens; it is
//! not a secret. A forged marker gains a caller nothing: every page is authorized anew with the
//! same filters, and Redshift checks its markers itself.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// Why a token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum PageTokenError {
    /// Not a token this gateway issued, or altered since.
    #[error("not a page token this gateway issued, or altered since; start again without one")]
    Malformed,
    /// Issued for a request with other filters.
    #[error(
        "issued for a request with other filters (consumer_account, consumer_arn, status or state); send the same filters with it, or start again without one"
    )]
    OtherFilters,
}

const VERSION: &str = "1";
const CHECKSUM_BYTES: usize = 12;

/// What a page token binds a marker to: the account listed and the filters of the listing.
pub(crate) fn filter_fingerprint(account: &str, consumer_arn: &str, status: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"datashare-gateway list filters\0")
        .chain_update(account.as_bytes())
        .chain_update(b"\0")
        .chain_update(consumer_arn.as_bytes())
        .chain_update(b"\0")
        .chain_update(status.as_bytes())
        .finalize();
    hex::encode(&digest[..8])
}

/// What a ListApprovals page token binds its cursor to: the state filter.
pub(crate) fn approvals_fingerprint(state: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"datashare-gateway approvals filters\0")
        .chain_update(state.as_bytes())
        .finalize();
    hex::encode(&digest[..8])
}

fn checksum(payload: &str) -> [u8; CHECKSUM_BYTES] {
    let digest = Sha256::new()
        .chain_update(b"datashare-gateway page token\0")
        .chain_update(payload.as_bytes())
        .finalize();
    let mut out = [0; CHECKSUM_BYTES];
    out.copy_from_slice(&digest[..CHECKSUM_BYTES]);
    out
}

/// The token for the page that starts at Redshift's `marker`.
pub(crate) fn encode(marker: &str, fingerprint: &str) -> String {
    let payload = format!("{VERSION}:{fingerprint}:{marker}");
    let mut bytes = payload.clone().into_bytes();
    bytes.extend_from_slice(&checksum(&payload));
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The marker a token carries, if the token is intact and was issued for `fingerprint`.
pub(crate) fn decode(token: &str, fingerprint: &str) -> Result<String, PageTokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| PageTokenError::Malformed)?;
    let split = bytes
        .len()
        .checked_sub(CHECKSUM_BYTES)
        .ok_or(PageTokenError::Malformed)?;
    let (payload, sum) = bytes.split_at(split);
    let payload = std::str::from_utf8(payload).map_err(|_| PageTokenError::Malformed)?;
    if checksum(payload) != sum {
        return Err(PageTokenError::Malformed);
    }
    let mut parts = payload.splitn(3, ':');
    let (Some(VERSION), Some(issued_for), Some(marker)) =
        (parts.next(), parts.next(), parts.next())
    else {
        return Err(PageTokenError::Malformed);
    };
    if marker.is_empty() {
        return Err(PageTokenError::Malformed);
    }
    if issued_for != fingerprint {
        return Err(PageTokenError::OtherFilters);
    }
    Ok(marker.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_round_trips_for_its_own_filters_only() {
        let mine = filter_fingerprint("444455556666", "", "ACTIVE");
        let token = encode("arn:aws:redshift:us-east-1:1:datashare:x/y", &mine);
        assert_eq!(
            decode(&token, &mine).unwrap(),
            "arn:aws:redshift:us-east-1:1:datashare:x/y"
        );
        let other = filter_fingerprint("444455556666", "", "AVAILABLE");
        assert_eq!(decode(&token, &other), Err(PageTokenError::OtherFilters));
    }

    #[test]
    fn every_single_character_change_is_refused() {
        let fp = filter_fingerprint("444455556666", "", "");
        let token = encode("marker-123", &fp);
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        for (i, original) in token.char_indices() {
            for replacement in alphabet.chars().filter(|c| *c != original) {
                let mut altered = token.clone();
                altered.replace_range(i..i + 1, &replacement.to_string());
                // A change in the last character's unused low bits decodes to the same bytes.
                if URL_SAFE_NO_PAD.decode(&altered).ok() == URL_SAFE_NO_PAD.decode(&token).ok() {
                    continue;
                }
                assert!(decode(&altered, &fp).is_err(), "{altered} was accepted");
            }
        }
    }

    #[test]
    fn garbage_is_malformed() {
        let fp = filter_fingerprint("444455556666", "", "");
        for token in ["", "!!!", "abc", "bm90IGEgdG9rZW4", &"A".repeat(400)] {
            assert_eq!(
                decode(token, &fp),
                Err(PageTokenError::Malformed),
                "{token}"
            );
        }
    }
}
