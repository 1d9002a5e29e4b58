//! The caller's principal as STS `SourceIdentity` and `RoleSessionName`, so AWS's own trail
//! (CloudTrail's `userIdentity.sessionContext.sourceIdentity`, and the session name at the end of
//! `userIdentity.arn`) names who asked, and no two principals share either.
//!
//! STS allows both 2–64 characters of `[A-Za-z0-9_+=,.@-]` (the session name's `[\w+=,.@-]` is
//! the same set), and a source identity never starts with `aws:`. A name is made within a budget
//! (64 characters for the source identity; 59 for the session name, after `dsgw-`) and takes the
//! first form that applies:
//! - **SPIFFE**: `spiffe://TD/ns/NS/sa/SA` reads `SA.NS@TD` when every part is non-empty, in the
//!   alphabet and without `@`, `SA` has no `.`, and the result fits:
//!   `reporting.data@example.internal`.
//! - **Plain**: any other principal in the alphabet, without `@`, that fits is kept as it is.
//! - **Cut**: anything else is its readable part (`SA.NS@TD` for a SPIFFE id of that shape, else
//!   the principal) with each character outside the alphabet replaced by `_`, cut to leave room
//!   for `-` and 16 hex digits: the first 64 bits of the SHA-256 of the full principal.
//!
//! "Fits" is 2 characters up to the budget and not ending like a cut form (`-` and 16 lower-case
//! hex digits). Why two principals never meet:
//! - a cut form ends in `-` and 16 hex digits and no exact form does (such a principal is cut);
//! - a SPIFFE form holds exactly one `@` and a plain form none;
//! - a SPIFFE form gives its principal back (SA before the first `.`, TD after the `@`, NS
//!   between) and a plain form is its principal;
//! - two cut forms meet only when two different principals agree in 64 bits of SHA-256: about
//!   3 in 10⁸ across a million principals; meeting a given principal takes some 2⁶⁴ tries (a
//!   pair made to meet each other, some 2³², and both would be the maker's).
//!
//! The session name is `dsgw-` and the same forms within 59, so the same holds for it; a
//! principal whose exact form is 60–64 characters long keeps it as its source identity and is cut
//! in its session name. `:` is outside the alphabet, so nothing starts with `aws:`.

use sha2::{Digest, Sha256};

/// The longest source identity or session name STS accepts.
const MAX_LEN: usize = 64;
/// The shortest.
const MIN_LEN: usize = 2;
/// Before every session name, so the gateway's sessions stand out in `userIdentity.arn`.
const SESSION_PREFIX: &str = "dsgw-";
/// 64 bits of SHA-256. With 32, look-alike SPIFFE ids met after 62,000 of them (the tests'
/// `NIGHTLY_5121` and `NIGHTLY_61998`).
const DIGEST_HEX_LEN: usize = 16;
/// `-` and the digest.
const DIGEST_SUFFIX_LEN: usize = 1 + DIGEST_HEX_LEN;

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '=' | ',' | '.' | '@' | '-')
}

fn all_allowed(s: &str) -> bool {
    s.chars().all(allowed)
}

/// Whether `s` ends like a cut form (`-` and 16 lower-case hex digits).
fn looks_cut(s: &str) -> bool {
    let Some(start) = s.len().checked_sub(DIGEST_SUFFIX_LEN) else {
        return false;
    };
    let bytes = &s.as_bytes()[start..];
    bytes[0] == b'-'
        && bytes[1..]
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
}

fn fits(s: &str, budget: usize) -> bool {
    (MIN_LEN..=budget).contains(&s.len()) && !looks_cut(s)
}

/// The parts of `spiffe://TD/ns/NS/sa/SA`.
#[derive(Debug)]
struct SpiffeId<'a> {
    trust_domain: &'a str,
    namespace: &'a str,
    service_account: &'a str,
}

impl<'a> SpiffeId<'a> {
    fn parse(principal: &'a str) -> Option<Self> {
        let rest = principal.strip_prefix("spiffe://")?;
        let (trust_domain, path) = rest.split_once('/')?;
        let mut parts = path.split('/');
        let (Some("ns"), Some(namespace), Some("sa"), Some(service_account), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        Some(SpiffeId {
            trust_domain,
            namespace,
            service_account,
        })
    }

    /// Whether `SA.NS@TD` can be read back into these parts.
    fn reads_back(&self) -> bool {
        [self.trust_domain, self.namespace, self.service_account]
            .iter()
            .all(|p| !p.is_empty() && all_allowed(p) && !p.contains('@'))
            && !self.service_account.contains('.')
    }

    fn readable(&self) -> String {
        format!(
            "{}.{}@{}",
            self.service_account, self.namespace, self.trust_domain
        )
    }
}

/// `principal`'s SPIFFE, plain or cut form within `budget` characters.
fn name_within(principal: &str, budget: usize) -> String {
    let spiffe = SpiffeId::parse(principal);
    let readable = spiffe
        .as_ref()
        .map_or_else(|| principal.to_owned(), SpiffeId::readable);
    let exact = || match &spiffe {
        Some(id) => id.reads_back(),
        None => all_allowed(principal) && !principal.contains('@'),
    };
    if fits(&readable, budget) && exact() {
        return readable;
    }
    let mut name: String = readable
        .chars()
        .map(|c| if allowed(c) { c } else { '_' })
        .take(budget - DIGEST_SUFFIX_LEN)
        .collect();
    let digest = Sha256::digest(principal.as_bytes());
    name.push('-');
    name.push_str(&hex::encode(&digest[..DIGEST_HEX_LEN / 2]));
    name
}

/// The `SourceIdentity` for `principal`: distinct for distinct principals (the module doc says
/// why).
pub fn source_identity(principal: &str) -> String {
    name_within(principal, MAX_LEN)
}

/// The `RoleSessionName` for `principal`: `dsgw-` and its name within the 59 characters left, so
/// as distinct as its source identity, which it equals after `dsgw-` unless that is longer than 59.
pub fn role_session_name(principal: &str) -> String {
    let name = name_within(principal, MAX_LEN - SESSION_PREFIX.len());
    format!("{SESSION_PREFIX}{name}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn valid(s: &str) -> bool {
        (MIN_LEN..=MAX_LEN).contains(&s.len()) && all_allowed(s) && !s.starts_with("aws:")
    }

    /// Two service accounts the first cut form (32 bits of hash) gave one name.
    const NIGHTLY_5121: &str =
        "spiffe://example.internal/ns/data-platform/sa/nightly-export-job-for-finance-team-5121";
    const NIGHTLY_61998: &str =
        "spiffe://example.internal/ns/data-platform/sa/nightly-export-job-for-finance-team-61998";

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
    fn plain_names_stay_and_everything_else_is_cut() {
        assert_eq!(source_identity("billing-service"), "billing-service");
        // Eight hex digits are not a cut form's sixteen.
        assert_eq!(source_identity("svc-deadbeef"), "svc-deadbeef");
        // A DNS SAN or CN with a `:`, a space or an `@` is not exact.
        for principal in [
            "host:8443",
            "John Doe",
            "me@example.com",
            "x",
            "",
            "aws:root",
        ] {
            let mapped = source_identity(principal);
            assert!(looks_cut(&mapped), "{principal} -> {mapped}");
            assert!(valid(&mapped), "{principal} -> {mapped}");
        }
        // SA with a dot would make `a.b.c@td` ambiguous: cut.
        assert!(looks_cut(&source_identity("spiffe://td/ns/c/sa/a.b")));
        // A principal that already looks cut is cut too, so no exact form can meet a cut one.
        let lookalike = "svc-0123456789abcdef";
        assert!(looks_cut(&source_identity(lookalike)));
        assert_ne!(source_identity(lookalike), lookalike);
        // Long principals are cut.
        let long = "a".repeat(200);
        assert_eq!(source_identity(&long).len(), MAX_LEN);
        assert_eq!(role_session_name(&long).len(), MAX_LEN);
        assert_ne!(source_identity(&long), source_identity(&"a".repeat(201)));
    }

    #[test]
    fn service_accounts_that_differ_past_the_cut_get_different_names() {
        assert_ne!(
            source_identity(NIGHTLY_5121),
            source_identity(NIGHTLY_61998)
        );
        assert_ne!(
            role_session_name(NIGHTLY_5121),
            role_session_name(NIGHTLY_61998)
        );
        for name in [
            source_identity(NIGHTLY_5121),
            role_session_name(NIGHTLY_61998),
        ] {
            assert!(valid(&name) && looks_cut(&name), "{name}");
        }
    }

    #[test]
    fn a_source_identity_too_long_for_a_session_name_is_cut_there_not_truncated() {
        // 62 characters: an exact source identity, 67 with `dsgw-`.
        let [one, two] = ["b", "c"].map(|last| format!("{}{last}", "a".repeat(61)));
        assert_eq!(source_identity(&one), one);
        assert_ne!(role_session_name(&one), role_session_name(&two));
        assert!(looks_cut(&role_session_name(&one)));
        assert_eq!(role_session_name(&one).len(), MAX_LEN);
    }

    /// A principal and what AWS's trail calls it.
    struct Example {
        principal: &'static str,
        source_identity: &'static str,
        session_name: &'static str,
    }

    /// The README's examples of what CloudTrail shows, as the code makes them.
    #[test]
    fn the_readme_examples_are_what_the_code_makes() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
            .expect("README.md");
        let examples = [
            Example {
                principal: "spiffe://example.internal/ns/data/sa/reporting",
                source_identity: "reporting.data@example.internal",
                session_name: "dsgw-reporting.data@example.internal",
            },
            Example {
                principal: "reporting.example.internal",
                source_identity: "reporting.example.internal",
                session_name: "dsgw-reporting.example.internal",
            },
            Example {
                principal: NIGHTLY_5121,
                source_identity: "nightly-export-job-for-finance-team-5121.data-p-43b461ede86d25bc",
                session_name: "dsgw-nightly-export-job-for-finance-team-5121.d-43b461ede86d25bc",
            },
            Example {
                principal: NIGHTLY_61998,
                source_identity: "nightly-export-job-for-finance-team-61998.data--43b461ed1531d944",
                session_name: "dsgw-nightly-export-job-for-finance-team-61998.-43b461ed1531d944",
            },
            Example {
                principal: "Jane Doe",
                source_identity: "Jane_Doe-01332c876518a793",
                session_name: "dsgw-Jane_Doe-01332c876518a793",
            },
        ];
        for example in examples {
            let principal = example.principal;
            assert_eq!(
                source_identity(principal),
                example.source_identity,
                "{principal}"
            );
            assert_eq!(
                role_session_name(principal),
                example.session_name,
                "{principal}"
            );
            for shown in [principal, example.source_identity, example.session_name] {
                assert!(readme.contains(shown), "the README does not show {shown}");
            }
        }
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
            let principal = format!("spiffe://{td}/ns/{ns}/sa/{sa}");
            let mapped = source_identity(&principal);
            prop_assert!(valid(&mapped), "{mapped:?}");
            prop_assert!(valid(&role_session_name(&principal)));
        }
    }

    /// 10⁶ generated principals of the shapes that collide most easily (SPIFFE ids over a small
    /// alphabet, plain names, names with characters that get replaced, names that look cut,
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
                    let suffix = word(&mut rng, b"0123456789abcdef", 16, 16);
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

    const LONG_SPIFFE_IDS: usize = 1_000_000;

    /// 10⁶ SPIFFE ids too long for `SA.NS@TD`, most of them alike in all that the cut keeps (the
    /// shape that met with 32 bits of hash).
    fn long_spiffe_ids() -> impl Iterator<Item = String> {
        const WORDS: &str = "nightly-export-job-for-finance-team-and-quarterly-close";
        const NAMESPACES: [&str; 4] = ["data-platform", "finance", "ml", "analytics-reporting"];
        (0..LONG_SPIFFE_IDS).map(|n| {
            // Fibonacci hashing spreads the choices below over n: the same ids on every run.
            let mix = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
            // SA of 45 characters or more: `SA.NS@example.internal` is over 64.
            let sa = &WORDS[..45 + (mix % 11) as usize];
            let ns = NAMESPACES[(mix / 11 % 4) as usize];
            // The number that tells them apart goes in SA or in NS, where the cut drops most of it.
            if (mix / 44).is_multiple_of(2) {
                format!("spiffe://example.internal/ns/{ns}/sa/{sa}-{n}")
            } else {
                format!("spiffe://example.internal/ns/{ns}-{n}/sa/{sa}")
            }
        })
    }

    // Source identities and session names are two tests, not one, so they run side by side: in a
    // debug build each takes some 9 s of CPU (a name and its SHA-256, some 9 µs).
    #[test]
    fn a_million_long_spiffe_ids_get_a_million_valid_source_identities() {
        let mut seen = HashSet::with_capacity(LONG_SPIFFE_IDS);
        for principal in long_spiffe_ids() {
            let name = source_identity(&principal);
            assert!(valid(&name) && looks_cut(&name), "{principal} -> {name}");
            assert!(
                seen.insert(name),
                "{principal}: its source identity is taken"
            );
        }
        assert_eq!(seen.len(), LONG_SPIFFE_IDS);
    }

    #[test]
    fn a_million_long_spiffe_ids_get_a_million_valid_session_names() {
        let mut seen = HashSet::with_capacity(LONG_SPIFFE_IDS);
        for principal in long_spiffe_ids() {
            let name = role_session_name(&principal);
            assert!(valid(&name) && looks_cut(&name), "{principal} -> {name}");
            assert!(seen.insert(name), "{principal}: its session name is taken");
        }
        assert_eq!(seen.len(), LONG_SPIFFE_IDS);
    }
}
