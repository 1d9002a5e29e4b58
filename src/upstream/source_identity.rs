//! The caller's principal as STS `SourceIdentity` and `RoleSessionName`, so AWS's own trail
//! (CloudTrail's `userIdentity.sessionContext.sourceIdentity`) names who asked.
//!
//! STS allows 2–64 characters of `[A-Za-z0-9_+=,.@-]`, never starting with `aws:`. The mapping is
//! deterministic and injective in practice:
//! - A SPIFFE id `spiffe://TD/ns/NS/sa/SA` becomes `SA.NS@TD` when every part is already in the
//!   alphabet, `SA` has no `.` (so the first `.` splits SA from NS unambiguously) and the result
//!   fits: `reporting.data@example.internal`.
//! - Any other principal in the alphabet, without `@`, 2–64 characters long, is kept as it is.
//! - Everything else is the principal with each character outside the alphabet replaced by `_`,
//!   cut to 55 characters, then `-` and 8 hex digits of the SHA-256 of the full principal.
//!
//! Exact forms never end in `-` and 8 lower-case hex digits (such a principal takes the hashed
//! form), and only SPIFFE forms hold an `@`, so the three forms cannot meet; two hashed forms meet
//! only when their prefixes and 32-bit hashes both agree. `:` is outside the alphabet, so no
//! result starts with `aws:`.

use sha2::{Digest, Sha256};

/// The longest source identity STS accepts.
const MAX_LEN: usize = 64;
/// The shortest.
const MIN_LEN: usize = 2;
/// `-` and 8 hex digits.
const HASH_SUFFIX_LEN: usize = 9;

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '=' | ',' | '.' | '@' | '-')
}

fn all_allowed(s: &str) -> bool {
    s.chars().all(allowed)
}

/// Whether `s` ends like a hashed form (`-` and 8 lower-case hex digits).
fn looks_hashed(s: &str) -> bool {
    let bytes = s.as_bytes();
    bytes.len() >= HASH_SUFFIX_LEN
        && bytes[bytes.len() - HASH_SUFFIX_LEN] == b'-'
        && bytes[bytes.len() - 8..]
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

fn fits(s: &str) -> bool {
    (MIN_LEN..=MAX_LEN).contains(&s.len()) && !looks_hashed(s)
}

/// `SA.NS@TD` for `spiffe://TD/ns/NS/sa/SA`, when that is exact.
fn spiffe_form(principal: &str) -> Option<String> {
    let rest = principal.strip_prefix("spiffe://")?;
    let (trust_domain, path) = rest.split_once('/')?;
    let mut parts = path.split('/');
    let (Some("ns"), Some(ns), Some("sa"), Some(sa), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let exact = [trust_domain, ns, sa]
        .iter()
        .all(|p| !p.is_empty() && all_allowed(p) && !p.contains('@'))
        && !sa.contains('.');
    let form = format!("{sa}.{ns}@{trust_domain}");
    (exact && fits(&form)).then_some(form)
}

/// The `SourceIdentity` for `principal`.
pub fn source_identity(principal: &str) -> String {
    if let Some(form) = spiffe_form(principal) {
        return form;
    }
    if all_allowed(principal) && !principal.contains('@') && fits(principal) {
        return principal.to_owned();
    }
    let mut prefix: String = principal
        .chars()
        .map(|c| if allowed(c) { c } else { '_' })
        .take(MAX_LEN - HASH_SUFFIX_LEN)
        .collect();
    let digest = Sha256::digest(principal.as_bytes());
    prefix.push('-');
    prefix.push_str(&hex::encode(&digest[..4]));
    prefix
}

/// The `RoleSessionName` for `principal`: `dsgw-` and its source identity, cut to 64.
pub fn role_session_name(principal: &str) -> String {
    let mut name = format!("dsgw-{}", source_identity(principal));
    // Every character of a source identity is ASCII, so any byte index is a boundary.
    name.truncate(MAX_LEN);
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn valid(s: &str) -> bool {
        (MIN_LEN..=MAX_LEN).contains(&s.len()) && all_allowed(s) && !s.starts_with("aws:")
    }

    #[test]
    fn spiffe_ids_read_as_service_namespace_and_trust_domain() {
        assert_eq!(
            source_identity("spiffe://example.internal/ns/data/sa/reporting"),
            "reporting.data@example.internal"
        );
        assert_eq!(
            role_session_name("spiffe://example.internal/ns/data/sa/reporting"),
            "dsgw-reporting.data@example.internal"
        );
    }

    #[test]
    fn plain_names_stay_and_everything_else_is_hashed() {
        assert_eq!(source_identity("billing-service"), "billing-service");
        // A DNS SAN or CN with a `:`, a space or an `@` is not exact.
        for principal in ["host:8443", "John Doe", "me@example.com", "x", "aws:root"] {
            let mapped = source_identity(principal);
            assert!(looks_hashed(&mapped), "{principal} -> {mapped}");
            assert!(valid(&mapped), "{principal} -> {mapped}");
        }
        // SA with a dot would make `a.b.c@td` ambiguous: hashed.
        assert!(looks_hashed(&source_identity("spiffe://td/ns/c/sa/a.b")));
        // A principal that already looks hashed is hashed too, so no exact form can meet a hash.
        assert!(looks_hashed(&source_identity("svc-deadbeef")));
        assert_ne!(source_identity("svc-deadbeef"), "svc-deadbeef");
        // Long principals are cut and hashed.
        let long = "a".repeat(200);
        assert_eq!(source_identity(&long).len(), MAX_LEN);
        assert_ne!(source_identity(&long), source_identity(&"a".repeat(201)));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn any_principal_maps_to_a_valid_source_identity(principal in any::<String>()) {
            let mapped = source_identity(&principal);
            prop_assert!(valid(&mapped), "{principal:?} -> {mapped:?}");
            let session = role_session_name(&principal);
            prop_assert!(valid(&session) && session.starts_with("dsgw-"), "{session:?}");
        }

        #[test]
        fn spiffe_like_principals_map_to_valid_values(
            td in "[a-z0-9.@:-]{0,40}", ns in "[a-zA-Z0-9._@/-]{0,20}", sa in "[a-zA-Z0-9._@-]{0,20}"
        ) {
            let mapped = source_identity(&format!("spiffe://{td}/ns/{ns}/sa/{sa}"));
            prop_assert!(valid(&mapped), "{mapped:?}");
        }
    }

    /// 10⁶ generated principals of the shapes that collide most easily (SPIFFE ids over a small
    /// alphabet, plain names, names with characters that get replaced, names that look hashed,
    /// long names): no two different principals share a source identity.
    #[test]
    fn a_million_different_principals_never_share_a_source_identity() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};
        use std::collections::HashMap;

        // A fixed seed, so CI cannot flake; the count is what the contract promises.
        let mut rng = StdRng::seed_from_u64(7);
        let word = |rng: &mut StdRng, alphabet: &[u8], min: usize, max: usize| -> String {
            let len = rng.random_range(min..=max);
            (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
                .collect()
        };
        let mut seen: HashMap<String, String> = HashMap::new();
        for _ in 0..1_000_000 {
            let principal = match rng.random_range(0..5) {
                0 => format!(
                    "spiffe://{}/ns/{}/sa/{}",
                    word(&mut rng, b"ab.", 1, 5),
                    word(&mut rng, b"ab.@-", 1, 5),
                    word(&mut rng, b"ab.", 1, 5)
                ),
                1 => word(&mut rng, b"ab.@:_ -", 1, 9),
                2 => {
                    let name = word(&mut rng, b"abcdefghij0123456789", 1, 8);
                    let suffix = word(&mut rng, b"0123456789abcdef", 8, 8);
                    format!("{name}-{suffix}")
                }
                3 => word(&mut rng, b"ab", 50, 70),
                _ => word(&mut rng, b"abcdefghijklmnopqrstuvwxyz0123456789.-_", 1, 12),
            };
            let mapped = source_identity(&principal);
            if let Some(other) = seen.insert(mapped.clone(), principal.clone()) {
                assert_eq!(other, principal, "both map to {mapped}");
            }
        }
        assert!(
            seen.len() > 500_000,
            "only {} distinct principals",
            seen.len()
        );
    }
}
