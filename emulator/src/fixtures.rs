//! The fixtures file (TOML) and the admin API's seed body (JSON): access keys, IAM roles,
//! namespaces, datashares and the grants on them. The same structs serve both, so a test can seed at
//! runtime anything a fixtures file can hold.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::EmulatorError;
use super::arn::{AccountId, NamespaceArn, NamespaceGuid, RoleArn, is_iam_name_char};
use super::iam::{MAX_DURATION_SECS, MIN_ROLE_MAX_DURATION_SECS, external_id_breaks_model};

/// Everything the emulator starts with. Every list may be empty.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Fixtures {
    /// Access keys; the account owning the key that signed a request is the caller.
    #[serde(default)]
    pub keys: Vec<KeyFixture>,
    /// IAM roles that STS AssumeRole can hand out sessions for.
    #[serde(default)]
    pub roles: Vec<RoleFixture>,
    /// Producer and consumer namespaces.
    #[serde(default)]
    pub namespaces: Vec<NamespaceFixture>,
    /// Datashares, each owned by one of `namespaces`.
    #[serde(default)]
    pub datashares: Vec<DataShareFixture>,
}

/// An access key and the account it belongs to.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFixture {
    /// The access key id (`AKIA...`).
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
    /// The 12-digit account that owns the key.
    pub account: String,
    /// When set, requests signed with this key must carry this `x-amz-security-token`.
    #[serde(default)]
    pub session_token: Option<String>,
    /// The IAM user the key belongs to, as the event log names the caller
    /// (`arn:aws:iam::ACCOUNT:user/NAME`); default: the access key id.
    #[serde(default)]
    pub user_name: Option<String>,
}

impl KeyFixture {
    /// The IAM user name the key acts as.
    pub fn user_name(&self) -> &str {
        self.user_name.as_deref().unwrap_or(&self.access_key_id)
    }
}

/// An IAM role and the parts of its trust policy the emulator models.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoleFixture {
    /// `arn:aws:iam::ACCOUNT:role/[PATH/]NAME`; sessions act as ACCOUNT.
    pub arn: String,
    /// The accounts whose users and roles the trust policy lets call AssumeRole.
    pub trusted_accounts: Vec<String>,
    /// When set, AssumeRole must pass exactly this `ExternalId` (an `sts:ExternalId` condition).
    #[serde(default)]
    pub external_id: Option<String>,
    /// AssumeRole must pass a `SourceIdentity` (an `sts:SourceIdentity` condition).
    #[serde(default)]
    pub require_source_identity: bool,
    /// The role's maximum session duration in seconds, 3600 to 43200: a longer
    /// `DurationSeconds` is refused. Default 43200 (assumption: AWS's default for a role is
    /// 3600; the emulator lets any duration the API allows through unless a fixture caps it).
    #[serde(default)]
    pub max_session_duration: Option<u32>,
}
/// Provisioned cluster or Redshift Serverless.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NamespaceKindFixture {
    /// `arn:aws:redshift:{region}:{account}:namespace:{guid}`
    Provisioned,
    /// `arn:aws:redshift-serverless:{region}:{account}:namespace/{guid}`
    Serverless,
}

/// A namespace in the emulator's region.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceFixture {
    /// The owning account.
    pub account: String,
    /// The namespace GUID.
    pub guid: String,
    /// Provisioned (the default) or serverless.
    #[serde(default = "provisioned")]
    pub kind: NamespaceKindFixture,
}

fn provisioned() -> NamespaceKindFixture {
    NamespaceKindFixture::Provisioned
}

/// A datashare, as `CREATE DATASHARE` would have made it.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DataShareFixture {
    /// The GUID of the producer namespace that owns the share (it must be a provisioned
    /// namespace listed in `namespaces`).
    pub producer_namespace: String,
    /// The datashare name.
    pub name: String,
    /// `AllowPubliclyAccessibleConsumers`.
    #[serde(default)]
    pub allow_publicly_accessible_consumers: bool,
    /// `ManagedBy`, e.g. `ADX`.
    #[serde(default)]
    pub managed_by: Option<String>,
    /// `DataShareType`; the model's only value is `INTERNAL`.
    #[serde(default)]
    pub data_share_type: Option<String>,
    /// Consumers granted usage, with where each stands.
    #[serde(default)]
    pub grants: Vec<GrantFixture>,
}

/// Where a grant to a consumer account stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum GrantStatus {
    /// `GRANT USAGE` done, the producer has not called `AuthorizeDataShare` yet.
    PendingAuthorization,
    /// Authorized: the consumer sees the share as AVAILABLE (or ACTIVE once associated).
    Authorized,
    /// The producer removed authorization.
    Deauthorized,
    /// The consumer rejected the share.
    Rejected,
}

/// `GRANT USAGE ON DATASHARE ... TO ACCOUNT '<consumer>'`, and what happened next.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GrantFixture {
    /// The consumer account id, or a keyword such as `ADX`.
    pub consumer: String,
    /// Where the grant stands (default `PENDING_AUTHORIZATION`).
    #[serde(default = "pending")]
    pub status: GrantStatus,
    /// `ProducerAllowedWrites`, as given to `AuthorizeDataShare`.
    #[serde(default)]
    pub allow_writes: Option<bool>,
    /// Associations the consumer already made (only meaningful when `AUTHORIZED`).
    #[serde(default)]
    pub associations: Vec<AssociationFixture>,
}

fn pending() -> GrantStatus {
    GrantStatus::PendingAuthorization
}

/// One association the consumer made. With neither `consumer_arn` nor `consumer_region`, the
/// association covers the entire account.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AssociationFixture {
    /// A namespace ARN of the consumer account.
    #[serde(default)]
    pub consumer_arn: Option<String>,
    /// A region: all existing and future namespaces there.
    #[serde(default)]
    pub consumer_region: Option<String>,
    /// `ConsumerAcceptedWrites`.
    #[serde(default)]
    pub allow_writes: Option<bool>,
}

/// `examples/emulator-fixtures.toml` at the workspace root, built in so `dev` works from any
/// directory.
const DEV_FIXTURES: &str = include_str!("../../examples/emulator-fixtures.toml");

impl Fixtures {
    /// The dev fixtures (`examples/emulator-fixtures.toml`, embedded at build time).
    pub fn dev() -> Result<Fixtures, EmulatorError> {
        let fixtures: Fixtures =
            toml::from_str(DEV_FIXTURES).map_err(|source| EmulatorError::ParseFixtures {
                path: "examples/emulator-fixtures.toml".into(),
                source: Box::new(source),
            })?;
        fixtures.validate()?;
        Ok(fixtures)
    }

    /// Reads and validates a fixtures file.
    pub fn load(path: &Path) -> Result<Fixtures, EmulatorError> {
        let text = std::fs::read_to_string(path).map_err(|source| EmulatorError::ReadFixtures {
            path: path.to_owned(),
            source,
        })?;
        let fixtures: Fixtures =
            toml::from_str(&text).map_err(|source| EmulatorError::ParseFixtures {
                path: path.to_owned(),
                source: Box::new(source),
            })?;
        fixtures.validate()?;
        Ok(fixtures)
    }

    /// Checks every value against its rule, naming the key and the value on failure.
    pub fn validate(&self) -> Result<(), EmulatorError> {
        let invalid = |key: &str, value: &str, rule: &str| EmulatorError::InvalidFixture {
            key: key.to_owned(),
            value: value.to_owned(),
            rule: rule.to_owned(),
        };
        for key in &self.keys {
            AccountId::parse(&key.account)
                .map_err(|e| invalid("keys.account", &key.account, &e.to_string()))?;
            if key.access_key_id.is_empty() || key.secret_access_key.is_empty() {
                return Err(invalid(
                    "keys.access_key_id",
                    &key.access_key_id,
                    "access key id and secret must not be empty",
                ));
            }
            if let Some(name) = &key.user_name
                && (!(1..=64).contains(&name.len()) || !name.chars().all(is_iam_name_char))
            {
                return Err(invalid(
                    "keys.user_name",
                    name,
                    "an IAM user name is 1 to 64 of A-Z a-z 0-9 _ + = , . @ -",
                ));
            }
        }
        for role in &self.roles {
            RoleArn::parse(&role.arn)
                .map_err(|e| invalid("roles.arn", &role.arn, &e.to_string()))?;
            for account in &role.trusted_accounts {
                AccountId::parse(account)
                    .map_err(|e| invalid("roles.trusted_accounts", account, &e.to_string()))?;
            }
            if let Some(id) = &role.external_id
                && external_id_breaks_model(id)
            {
                return Err(invalid(
                    "roles.external_id",
                    id,
                    "2 to 1224 of A-Z a-z 0-9 _ + = , . @ : / - (the model's externalIdType)",
                ));
            }
            if let Some(secs) = role.max_session_duration
                && !(MIN_ROLE_MAX_DURATION_SECS..=MAX_DURATION_SECS).contains(&secs)
            {
                return Err(invalid(
                    "roles.max_session_duration",
                    &secs.to_string(),
                    "3600 to 43200 seconds (IAM's MaxSessionDuration range)",
                ));
            }
        }
        for ns in &self.namespaces {
            AccountId::parse(&ns.account)
                .map_err(|e| invalid("namespaces.account", &ns.account, &e.to_string()))?;
            NamespaceGuid::parse(&ns.guid)
                .map_err(|e| invalid("namespaces.guid", &ns.guid, &e.to_string()))?;
        }
        for share in &self.datashares {
            NamespaceGuid::parse(&share.producer_namespace).map_err(|e| {
                invalid(
                    "datashares.producer_namespace",
                    &share.producer_namespace,
                    &e.to_string(),
                )
            })?;
            if let Some(t) = &share.data_share_type
                && t != "INTERNAL"
            {
                return Err(invalid(
                    "datashares.data_share_type",
                    t,
                    "the model's only DataShareType is INTERNAL",
                ));
            }
            for grant in &share.grants {
                if grant.consumer.is_empty() {
                    return Err(invalid(
                        "datashares.grants.consumer",
                        "",
                        "must be an account id or a keyword such as ADX",
                    ));
                }
                for assoc in &grant.associations {
                    if let Some(arn) = &assoc.consumer_arn {
                        NamespaceArn::parse(arn).map_err(|e| {
                            invalid(
                                "datashares.grants.associations.consumer_arn",
                                arn,
                                &e.to_string(),
                            )
                        })?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_fixtures_load() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/emulator-fixtures.toml");
        let f = Fixtures::load(&path).unwrap();
        assert!(
            f.keys
                .iter()
                .any(|k| k.access_key_id == "AKIAIOSFODNN7EXAMPLE")
        );
        assert!(f.datashares.iter().any(|d| d.name == "legal_hold_share"));
        let platform = f
            .keys
            .iter()
            .find(|k| k.access_key_id == "AKIA2PLATFORMEXAMPLE")
            .unwrap();
        assert_eq!(platform.account, "210987654321");
        assert_eq!(f.roles.len(), 2);
        assert!(
            f.roles
                .iter()
                .all(|r| r.require_source_identity && r.trusted_accounts == ["210987654321"])
        );
        assert_eq!(Fixtures::dev().unwrap(), f);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = toml::from_str::<Fixtures>(
            "[[keys]]\naccess_key_id='a'\nsecret_access_key='b'\naccount='111122223333'\nextra=1\n",
        );
        assert!(err.is_err());
    }

    #[test]
    fn a_bad_role_names_the_key() {
        let f: Fixtures = toml::from_str(
            "[[roles]]\narn='arn:aws:iam::444455556666:user/x'\ntrusted_accounts=['210987654321']\n",
        )
        .unwrap();
        let err = f.validate().unwrap_err().to_string();
        assert!(err.contains("roles.arn"), "{err}");
        let f: Fixtures = toml::from_str(
            "[[roles]]\narn='arn:aws:iam::444455556666:role/x'\ntrusted_accounts=['210987654321']\nexternal_id='a b'\n",
        )
        .unwrap();
        let err = f.validate().unwrap_err().to_string();
        assert!(err.contains("roles.external_id"), "{err}");
    }

    #[test]
    fn a_bad_account_names_the_key() {
        let f: Fixtures = toml::from_str(
            "[[namespaces]]\naccount='12'\nguid='9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f'\n",
        )
        .unwrap();
        let err = f.validate().unwrap_err().to_string();
        assert!(err.contains("namespaces.account"), "{err}");
    }
}
