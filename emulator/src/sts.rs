//! STS `AssumeRole`: roles from the fixtures with the parts of a trust policy the emulator
//! models, the model's constraints on every member it accepts, and the temporary credentials
//! it hands out, which then sign Redshift calls as the role's account.
//!
//! Each rule says where it comes from: the STS model (`sts-2011-06-15.service-2.json`, its
//! shapes and documentation), or "assumption" (listed in `docs/emulator.md`).

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use http::StatusCode;
use rand::Rng;
use rand::distr::Alphanumeric;
use time::OffsetDateTime;

use super::EmulatorError;
use super::arn::{Region, RoleArn, is_iam_name_char};
use super::fixtures::RoleFixture;
use super::iam::{MAX_DURATION_SECS, MIN_DURATION_SECS, is_external_id_char};
use super::keys::{KeyHolder, Keys, Principal, Session, Tag};
use super::protocol::{AwsError, QueryRequest, Xml};

/// The one STS operation the emulator implements.
pub(crate) const ASSUME_ROLE: &str = "AssumeRole";
/// "By default, the value is set to 3600 seconds" (model, DurationSeconds).
const DEFAULT_DURATION_SECS: u32 = 3600;
/// "Role chaining limits your ... role session to a maximum of one hour" (model).
const CHAINED_MAX_DURATION_SECS: u32 = 3600;
/// `tagListType` and `tagKeyListType`: at most 50 (model).
const MAX_TAGS: usize = 50;
/// The size of a session token the emulator hands out (real ones vary, see the model's note
/// on `Credentials`).
const SESSION_TOKEN_LEN: usize = 356;

/// A role the fixtures define.
#[derive(Debug)]
struct Role {
    arn: String,
    parsed: RoleArn,
    /// `AROA...`: the role's unique id, stable for its ARN.
    role_id: String,
    trusted_accounts: Vec<String>,
    external_id: Option<String>,
    require_source_identity: bool,
    max_session_duration: u32,
}

/// The roles AssumeRole can issue sessions for.
#[derive(Debug)]
pub(crate) struct Sts {
    partition: &'static str,
    roles: RwLock<HashMap<String, Arc<Role>>>,
}

/// The validated members of an AssumeRole request.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct AssumeRoleInput<'a> {
    pub(crate) role_arn: &'a str,
    pub(crate) role_session_name: &'a str,
    pub(crate) duration_seconds: Option<u32>,
    pub(crate) external_id: Option<&'a str>,
    pub(crate) source_identity: Option<&'a str>,
    pub(crate) tags: Vec<Tag>,
    pub(crate) transitive_tag_keys: Vec<String>,
}

impl Sts {
    pub(crate) fn new(region: &Region, roles: &[RoleFixture]) -> Result<Self, EmulatorError> {
        let sts = Sts {
            partition: region.partition(),
            roles: RwLock::new(HashMap::new()),
        };
        sts.seed(roles)?;
        Ok(sts)
    }

    /// Adds or replaces roles (by ARN).
    pub(crate) fn seed(&self, roles: &[RoleFixture]) -> Result<(), EmulatorError> {
        let mut built = Vec::with_capacity(roles.len());
        for f in roles {
            let invalid = |key: &str, value: &str, rule: String| EmulatorError::InvalidFixture {
                key: key.to_owned(),
                value: value.to_owned(),
                rule,
            };
            let parsed =
                RoleArn::parse(&f.arn).map_err(|e| invalid("roles.arn", &f.arn, e.to_string()))?;
            if parsed.partition() != self.partition {
                return Err(invalid(
                    "roles.arn",
                    &f.arn,
                    format!("must be in the emulator's partition, {}", self.partition),
                ));
            }
            built.push(Role {
                role_id: unique_id("AROA", &f.arn),
                arn: f.arn.clone(),
                parsed,
                trusted_accounts: f.trusted_accounts.clone(),
                external_id: f.external_id.clone(),
                require_source_identity: f.require_source_identity,
                max_session_duration: f.max_session_duration.unwrap_or(MAX_DURATION_SECS),
            });
        }
        let mut map = self.roles.write().unwrap_or_else(PoisonError::into_inner);
        for role in built {
            map.insert(role.arn.clone(), Arc::new(role));
        }
        Ok(())
    }

    /// Back to `roles` only.
    pub(crate) fn reset(&self, roles: &[RoleFixture]) -> Result<(), EmulatorError> {
        self.roles
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.seed(roles)
    }

    /// The roles (without their external ids), for the admin API's state.
    pub(crate) fn snapshot(&self) -> serde_json::Value {
        let roles = self.roles.read().unwrap_or_else(PoisonError::into_inner);
        let mut list: Vec<_> = roles
            .values()
            .map(|r| {
                serde_json::json!({
                    "arn": r.arn,
                    "role_id": r.role_id,
                    "trusted_accounts": r.trusted_accounts,
                    "external_id_required": r.external_id.is_some(),
                    "require_source_identity": r.require_source_identity,
                    "max_session_duration": r.max_session_duration,
                })
            })
            .collect();
        list.sort_by(|a, b| a["arn"].as_str().cmp(&b["arn"].as_str()));
        serde_json::Value::Array(list)
    }

    /// The ARN the caller is known by, as AWS writes it in messages and CloudTrail.
    pub(crate) fn caller_arn(&self, account: &str, holder: &KeyHolder) -> String {
        match holder {
            KeyHolder::User { name } => {
                format!("arn:{}:iam::{account}:user/{name}", self.partition)
            }
            KeyHolder::Session(s) => s.assumed_role_arn.clone(),
        }
    }

    /// AssumeRole for an authenticated caller at emulator time `now`: the new session's key
    /// signs requests from then on (it is added to `keys`).
    pub(crate) fn assume_role(
        &self,
        keys: &Keys,
        caller: &Principal,
        input: &AssumeRoleInput<'_>,
        now: OffsetDateTime,
    ) -> Result<Arc<Session>, AwsError> {
        let caller_arn = self.caller_arn(&caller.account, &caller.holder);
        // Message format from AWS; the same for every trust failure, so a caller cannot
        // tell which condition failed.
        let denied = || {
            AwsError::new(
                StatusCode::FORBIDDEN,
                "AccessDenied",
                format!(
                    "User: {caller_arn} is not authorized to perform: sts:AssumeRole on resource: {}",
                    input.role_arn
                ),
            )
        };
        // Only the trust is checked (assumption): not the caller's own policy, nor the
        // sts:SetSourceIdentity / sts:TagSession permissions that SourceIdentity and Tags need.
        let role = self
            .roles
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(input.role_arn)
            .cloned()
            // An unknown role reads like an untrusted one (assumption).
            .ok_or_else(denied)?;
        let chained = match &caller.holder {
            KeyHolder::Session(s) => Some(s.clone()),
            KeyHolder::User { .. } => None,
        };
        // The source identity persists across chained sessions (model, SourceIdentity);
        // a chained call may repeat it but not change it (assumption: AccessDenied).
        let inherited = chained.as_ref().and_then(|s| s.source_identity.clone());
        let source_identity = match (&inherited, input.source_identity) {
            (Some(old), Some(new)) if old != new => return Err(denied()),
            (Some(old), _) => Some(old.clone()),
            (None, new) => new.map(str::to_owned),
        };
        if !role.trusted_accounts.contains(&caller.account) {
            return Err(denied());
        }
        if let Some(want) = &role.external_id
            && input.external_id != Some(want.as_str())
        {
            return Err(denied());
        }
        if role.require_source_identity && source_identity.is_none() {
            return Err(denied());
        }
        let duration = input.duration_seconds.unwrap_or(DEFAULT_DURATION_SECS);
        if chained.is_some() && duration > CHAINED_MAX_DURATION_SECS {
            return Err(validation(
                "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining.",
            ));
        }
        if duration > role.max_session_duration {
            return Err(validation(
                "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.",
            ));
        }
        let account = role.parsed.account().to_string();
        let session = Arc::new(Session {
            access_key_id: format!("ASIA{}", random_base32(16)),
            secret_access_key: random_text(40),
            session_token: random_text(SESSION_TOKEN_LEN),
            assumed_role_arn: format!(
                "arn:{}:sts::{account}:assumed-role/{}/{}",
                self.partition,
                role.parsed.name(),
                input.role_session_name
            ),
            account,
            role_arn: role.arn.clone(),
            role_name: role.parsed.name().to_owned(),
            role_id: role.role_id.clone(),
            session_name: input.role_session_name.to_owned(),
            source_identity,
            tags: input.tags.clone(),
            created: now,
            expiration: now + time::Duration::seconds(i64::from(duration)),
        });
        keys.add_session(session.clone());
        Ok(session)
    }
}

/// 400 `ValidationError` (the code STS answers for a member that breaks the model).
fn validation(message: impl Into<String>) -> AwsError {
    AwsError::new(StatusCode::BAD_REQUEST, "ValidationError", message)
}

/// AWS's message for one broken constraint. `shown` is the value as echoed (None: null).
/// Only the first broken constraint is reported (assumption: AWS lists them all).
fn constraint(member: &str, shown: Option<&str>, rule: &str) -> AwsError {
    let value = shown.map_or_else(|| "null".to_owned(), |v| format!("'{v}'"));
    validation(format!(
        "1 validation error detected: Value {value} at '{member}' failed to satisfy constraint: {rule}"
    ))
}

/// Checks a string member's length (in characters) and pattern (`allowed` per character).
fn check_string(
    member: &str,
    value: &str,
    shown: &str,
    (min, max): (usize, usize),
    allowed: impl Fn(char) -> bool,
    pattern: &str,
) -> Result<(), AwsError> {
    let len = value.chars().count();
    if len < min {
        return Err(constraint(
            member,
            Some(shown),
            &format!("Member must have length greater than or equal to {min}"),
        ));
    }
    if len > max {
        return Err(constraint(
            member,
            Some(shown),
            &format!("Member must have length less than or equal to {max}"),
        ));
    }
    if !value.chars().all(allowed) {
        return Err(constraint(
            member,
            Some(shown),
            &format!("Member must satisfy regular expression pattern: {pattern}"),
        ));
    }
    Ok(())
}

/// `arnType`'s pattern: printable Unicode plus tab, CR and LF.
fn is_arn_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{7E}' | '\u{85}' | '\u{A0}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// `tagKeyType`'s pattern `[\p{L}\p{Z}\p{N}_.:/=+\-@]`. Letters are approximated by Rust's
/// `Alphabetic` property, separators by non-control white space, numbers by `Numeric`.
fn is_tag_char(c: char) -> bool {
    c.is_alphabetic()
        || c.is_numeric()
        || (c.is_whitespace() && !c.is_control())
        || "_.:/=+-@".contains(c)
}

impl<'a> AssumeRoleInput<'a> {
    /// Decodes and checks every member the emulator accepts against the model's constraints.
    /// `Policy`, `PolicyArns`, `SerialNumber`, `TokenCode`, `ProvidedContexts` and
    /// `MinimumSessionTokenSize` are ignored (assumption: not modelled).
    pub(crate) fn parse(q: &'a QueryRequest) -> Result<Self, AwsError> {
        let Some(role_arn) = q.string("RoleArn") else {
            return Err(constraint("roleArn", None, "Member must not be null"));
        };
        check_string(
            "roleArn",
            role_arn,
            role_arn,
            (20, 2048),
            is_arn_char,
            r"[\u0009\u000A\u000D\u0020-\u007E\u0085\u00A0-\uD7FF\uE000-\uFFFD\u10000-\u10FFFF]+",
        )?;
        let Some(role_session_name) = q.string("RoleSessionName") else {
            return Err(constraint(
                "roleSessionName",
                None,
                "Member must not be null",
            ));
        };
        check_string(
            "roleSessionName",
            role_session_name,
            role_session_name,
            (2, 64),
            is_iam_name_char,
            r"[\w+=,.@-]*",
        )?;
        let duration_seconds = match q.string("DurationSeconds") {
            None => None,
            Some(text) => {
                // A value that is not a whole number is a ValidationError too (assumption).
                let secs: i64 = text.parse().map_err(|_| {
                    constraint("durationSeconds", Some(text), "Member must be an integer")
                })?;
                if secs < i64::from(MIN_DURATION_SECS) {
                    return Err(constraint(
                        "durationSeconds",
                        Some(text),
                        "Member must have value greater than or equal to 900",
                    ));
                }
                if secs > i64::from(MAX_DURATION_SECS) {
                    return Err(constraint(
                        "durationSeconds",
                        Some(text),
                        "Member must have value less than or equal to 43200",
                    ));
                }
                u32::try_from(secs).ok()
            }
        };
        let external_id = q.string("ExternalId");
        if let Some(id) = external_id {
            // The value is a shared secret: never echoed (AWS does echo it).
            check_string(
                "externalId",
                id,
                "***",
                (2, 1224),
                is_external_id_char,
                r"[\w+=,.@:\/-]*",
            )?;
        }
        let source_identity = q.string("SourceIdentity");
        if let Some(si) = source_identity {
            // sourceIdentityType: 2 to 256 (assumption: the model's bound; the AssumeRole API
            // reference says 64).
            check_string(
                "sourceIdentity",
                si,
                si,
                (2, 256),
                is_iam_name_char,
                r"[\w+=,.@-]*",
            )?;
            // "You cannot use a value that begins with the text aws:" (model); the pattern
            // already excludes ':', this keeps the rule explicit should the pattern widen.
            if si.to_ascii_lowercase().starts_with("aws:") {
                return Err(constraint(
                    "sourceIdentity",
                    Some(si),
                    "Member must not begin with the reserved prefix aws:",
                ));
            }
        }
        let tags = parse_tags(q)?;
        let transitive_tag_keys = parse_transitive_keys(q)?;
        Ok(AssumeRoleInput {
            role_arn,
            role_session_name,
            duration_seconds,
            external_id,
            source_identity,
            tags,
            transitive_tag_keys,
        })
    }
}

fn parse_tags(q: &QueryRequest) -> Result<Vec<Tag>, AwsError> {
    let entries = q.indexed("Tags");
    if entries.len() > MAX_TAGS {
        return Err(constraint(
            "tags",
            Some("[...]"),
            "Member must have length less than or equal to 50",
        ));
    }
    let mut tags = Vec::with_capacity(entries.len());
    for (n, fields) in entries {
        let field = |name: &str| fields.iter().find(|(f, _)| *f == name).map(|(_, v)| *v);
        let Some(key) = field("Key") else {
            return Err(constraint(
                &format!("tags.{n}.member.key"),
                None,
                "Member must not be null",
            ));
        };
        let Some(value) = field("Value") else {
            return Err(constraint(
                &format!("tags.{n}.member.value"),
                None,
                "Member must not be null",
            ));
        };
        check_string(
            &format!("tags.{n}.member.key"),
            key,
            key,
            (1, 128),
            is_tag_char,
            r"[\p{L}\p{Z}\p{N}_.:/=+\-@]+",
        )?;
        check_string(
            &format!("tags.{n}.member.value"),
            value,
            value,
            (0, 256),
            is_tag_char,
            r"[\p{L}\p{Z}\p{N}_.:/=+\-@]*",
        )?;
        // "Tag key–value pairs are not case sensitive" (model, Tags), so two keys differing
        // only in case collide (assumption: the code and message).
        if tags
            .iter()
            .any(|t: &Tag| t.key.to_lowercase() == key.to_lowercase())
        {
            return Err(AwsError::new(
                StatusCode::BAD_REQUEST,
                "InvalidParameterValue",
                "Duplicate tag keys found. Please note that Tag keys are case insensitive.",
            ));
        }
        tags.push(Tag {
            key: key.to_owned(),
            value: value.to_owned(),
        });
    }
    Ok(tags)
}

fn parse_transitive_keys(q: &QueryRequest) -> Result<Vec<String>, AwsError> {
    let entries = q.indexed("TransitiveTagKeys");
    if entries.len() > MAX_TAGS {
        return Err(constraint(
            "transitiveTagKeys",
            Some("[...]"),
            "Member must have length less than or equal to 50",
        ));
    }
    let mut keys = Vec::with_capacity(entries.len());
    for (n, fields) in entries {
        let Some((_, key)) = fields.iter().find(|(f, _)| f.is_empty()) else {
            continue;
        };
        check_string(
            &format!("transitiveTagKeys.{n}.member"),
            key,
            key,
            (1, 128),
            is_tag_char,
            r"[\p{L}\p{Z}\p{N}_.:/=+\-@]+",
        )?;
        keys.push((*key).to_owned());
    }
    Ok(keys)
}

/// The inner XML of `<AssumeRoleResult>`, members in model order.
pub(crate) fn result_xml(s: &Session) -> String {
    let mut x = Xml::new();
    x.open("Credentials")
        .text("AccessKeyId", &s.access_key_id)
        .text("SecretAccessKey", &s.secret_access_key)
        .text("SessionToken", &s.session_token)
        .timestamp("Expiration", s.expiration)
        .close("Credentials")
        .open("AssumedRoleUser")
        .text("AssumedRoleId", &s.assumed_role_id())
        .text("Arn", &s.assumed_role_arn)
        .close("AssumedRoleUser");
    // AWS returns PackedPolicySize when session policies or tags are passed; the emulator
    // computes a percentage from the tags' size (assumption: the real packing is not
    // documented), and gives the same number as its replacement, SessionTokenUtilization.
    if let Some(percent) = packed_policy_percent(&s.tags) {
        x.text("PackedPolicySize", &percent.to_string());
    }
    if let Some(si) = &s.source_identity {
        x.text("SourceIdentity", si);
    }
    if let Some(percent) = packed_policy_percent(&s.tags) {
        x.text("SessionTokenUtilization", &percent.to_string());
    }
    x.text("SessionTokenSize", &s.session_token.len().to_string());
    x.finish()
}

fn packed_policy_percent(tags: &[Tag]) -> Option<usize> {
    if tags.is_empty() {
        return None;
    }
    // The packed limit is undocumented; 2048 bytes makes 50 full-size tags exceed 100%.
    let bytes: usize = tags.iter().map(|t| t.key.len() + t.value.len()).sum();
    Some((bytes * 100).div_ceil(2048).min(100))
}

/// `PREFIX` and 17 base-32 characters derived from `seed`: a stable unique id such as IAM's
/// `AROA...` role ids.
fn unique_id(prefix: &str, seed: &str) -> String {
    // FNV-1a, twice with different offsets: stable across runs, unlike std's hasher.
    let fnv = |offset: u64| {
        seed.bytes().fold(offset, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    let bits = (u128::from(fnv(0xcbf2_9ce4_8422_2325)) << 64) | u128::from(fnv(0x84222325));
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let tail: String = (0..17)
        .map(|i| char::from(alphabet[((bits >> (i * 5)) & 31) as usize]))
        .collect();
    format!("{prefix}{tail}")
}

/// Random upper-case base-32 text, as access key ids are.
fn random_base32(len: usize) -> String {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(alphabet[rng.random_range(0..alphabet.len())]))
        .collect()
}

/// Random text for secrets and tokens: letters, digits, `/` and `+` as AWS's are.
fn random_text(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|i| {
            if i % 13 == 7 {
                if rng.random_bool(0.5) { '/' } else { '+' }
            } else {
                char::from(rng.sample(Alphanumeric))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(body: &str) -> QueryRequest {
        QueryRequest::parse(body.as_bytes())
    }

    const ROLE: &str = "arn:aws:iam::444455556666:role/datashare-gateway";

    fn sts() -> Sts {
        Sts::new(
            &Region::parse("us-east-1").unwrap(),
            &[RoleFixture {
                arn: ROLE.into(),
                trusted_accounts: vec!["210987654321".into()],
                external_id: Some("dsgw-444455556666-example".into()),
                require_source_identity: true,
                max_session_duration: None,
            }],
        )
        .unwrap()
    }

    fn platform() -> Principal {
        Principal {
            access_key_id: "AKIA2PLATFORMEXAMPLE".into(),
            account: "210987654321".into(),
            holder: KeyHolder::User {
                name: "datashare-gateway".into(),
            },
        }
    }

    fn body(extra: &str) -> String {
        format!(
            "RoleArn={}&RoleSessionName=s1&ExternalId=dsgw-444455556666-example&SourceIdentity=alice{extra}",
            form_urlencoded::byte_serialize(ROLE.as_bytes()).collect::<String>()
        )
    }

    fn code(body: &str) -> String {
        let query = q(body);
        match AssumeRoleInput::parse(&query) {
            Err(e) => e.code.into_owned(),
            Ok(input) => match sts().assume_role(
                &Keys::default(),
                &platform(),
                &input,
                OffsetDateTime::now_utc(),
            ) {
                Ok(_) => "ok".into(),
                Err(e) => e.code.into_owned(),
            },
        }
    }

    #[test]
    fn a_trusted_caller_with_the_external_id_and_a_source_identity_gets_a_session() {
        let query = q(&body(
            "&DurationSeconds=900&Tags.member.1.Key=team&Tags.member.1.Value=data",
        ));
        let input = AssumeRoleInput::parse(&query).unwrap();
        assert_eq!(
            input.tags,
            [Tag {
                key: "team".into(),
                value: "data".into()
            }]
        );
        let now = OffsetDateTime::now_utc();
        let s = sts()
            .assume_role(&Keys::default(), &platform(), &input, now)
            .unwrap();
        assert_eq!(s.account, "444455556666");
        assert_eq!(
            s.assumed_role_arn,
            "arn:aws:sts::444455556666:assumed-role/datashare-gateway/s1"
        );
        assert!(s.access_key_id.starts_with("ASIA") && s.access_key_id.len() == 20);
        assert_eq!(s.expiration - now, time::Duration::seconds(900));
        assert!(s.assumed_role_id().starts_with("AROA") && s.assumed_role_id().ends_with(":s1"));
        let xml = result_xml(&s);
        assert!(xml.contains("<SourceIdentity>alice</SourceIdentity>"));
        assert!(xml.contains("<PackedPolicySize>"));
    }

    #[test]
    fn an_issued_session_signs_as_the_roles_account_with_its_token() {
        let query = q(&body(""));
        let input = AssumeRoleInput::parse(&query).unwrap();
        let keys = Keys::default();
        let s = sts()
            .assume_role(&keys, &platform(), &input, OffsetDateTime::now_utc())
            .unwrap();
        let key = keys.lookup(&s.access_key_id).unwrap();
        assert_eq!(key.account, "444455556666");
        assert_eq!(key.secret, s.secret_access_key);
        assert_eq!(key.session_token.as_deref(), Some(s.session_token.as_str()));
        assert!(matches!(key.holder, KeyHolder::Session(held) if Arc::ptr_eq(&held, &s)));
    }

    #[test]
    fn trust_failures_are_access_denied() {
        assert_eq!(code(&body("")), "ok");
        assert_eq!(
            code(&body("").replace("ExternalId=dsgw", "ExternalId=xdsgw")),
            "AccessDenied"
        );
        assert_eq!(
            code(&body("").replace("&ExternalId=dsgw-444455556666-example", "")),
            "AccessDenied"
        );
        assert_eq!(
            code(&body("").replace("&SourceIdentity=alice", "")),
            "AccessDenied"
        );
        assert_eq!(
            code(&body("").replace("datashare-gateway", "other-role")),
            "AccessDenied"
        );
        let untrusted = Principal {
            account: "111122223333".into(),
            ..platform()
        };
        let query = q(&body(""));
        let input = AssumeRoleInput::parse(&query).unwrap();
        let e = sts()
            .assume_role(
                &Keys::default(),
                &untrusted,
                &input,
                OffsetDateTime::now_utc(),
            )
            .unwrap_err();
        assert_eq!((e.status.as_u16(), e.code.as_ref()), (403, "AccessDenied"));
        assert_eq!(
            e.message,
            "User: arn:aws:iam::111122223333:user/datashare-gateway is not authorized to perform: sts:AssumeRole on resource: arn:aws:iam::444455556666:role/datashare-gateway"
        );
    }

    #[test]
    fn model_constraints_are_validation_errors() {
        for extra in [
            "&DurationSeconds=899",
            "&DurationSeconds=43201",
            "&DurationSeconds=ten",
            "&Tags.member.1.Key=a%20b!&Tags.member.1.Value=x",
            "&Tags.member.1.Key=k",
        ] {
            assert_eq!(code(&body(extra)), "ValidationError", "{extra}");
        }
        for (from, to) in [
            ("RoleSessionName=s1", "RoleSessionName=s"),
            ("RoleSessionName=s1", "RoleSessionName=a%20b"),
            ("SourceIdentity=alice", "SourceIdentity=a"),
            ("SourceIdentity=alice", "SourceIdentity=aws:x"),
            ("SourceIdentity=alice", "SourceIdentity=a%2Fb"),
        ] {
            assert_eq!(code(&body("").replace(from, to)), "ValidationError", "{to}");
        }
        let long = "a".repeat(65);
        assert_eq!(
            code(&body("").replace("RoleSessionName=s1", &format!("RoleSessionName={long}"))),
            "ValidationError"
        );
        assert_eq!(
            code(&body(
                "&Tags.member.1.Key=k&Tags.member.1.Value=v&Tags.member.2.Key=K&Tags.member.2.Value=w"
            )),
            "InvalidParameterValue"
        );
    }

    #[test]
    fn role_ids_are_stable_per_arn() {
        assert_eq!(unique_id("AROA", ROLE), unique_id("AROA", ROLE));
        assert_ne!(
            unique_id("AROA", ROLE),
            unique_id("AROA", "arn:aws:iam::1:role/y")
        );
        assert_eq!(unique_id("AROA", ROLE).len(), 21);
    }
}
