//! The fixtures file (TOML) and the admin API's seed body (JSON): access keys, namespaces,
//! datashares and the grants on them. The same structs serve both, so a test can seed at
//! runtime anything a fixtures file can hold.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::EmulatorError;
use super::arn::{AccountId, NamespaceArn, NamespaceGuid};

/// Everything the emulator starts with. Every list may be empty.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Fixtures {
    /// Access keys; the account owning the key that signed a request is the caller.
    #[serde(default)]
    pub keys: Vec<KeyFixture>,
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
    fn a_bad_account_names_the_key() {
        let f: Fixtures = toml::from_str(
            "[[namespaces]]\naccount='12'\nguid='9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f'\n",
        )
        .unwrap();
        let err = f.validate().unwrap_err().to_string();
        assert!(err.contains("namespaces.account"), "{err}");
    }
}
