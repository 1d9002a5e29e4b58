//! The consumer accounts the gateway serves and how it reaches each: `[accounts."<id>"]` (a role
//! assumed per caller) or `upstream.consumer_account` (the gateway's own credentials, the
//! single-account form). Any other account is refused before the intent is written.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tower::Service;

use super::sessions::RoleTarget;
use crate::arn::{AccountId, Partition, Region, RoleArn};
use crate::call::{Call, CallFuture, Operation};
use crate::errors::GatewayError;
use crate::middleware::Middleware;
use crate::policy::Permitted;

/// `[accounts."<12-digit id>"]`: a consumer account the gateway acts in through a role.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    /// The role the gateway assumes in the account (`arn:aws:iam::<id>:role/<name>`).
    pub role_arn: String,
    /// The environment variable holding the external id the role's trust policy requires.
    #[serde(default)]
    pub external_id_env: Option<String>,
    /// The file holding it (trailing whitespace ignored).
    #[serde(default)]
    pub external_id_file: Option<PathBuf>,
    /// The role session's lifetime: 900 to 43200 seconds.
    #[serde(default = "default_session_duration_secs")]
    pub session_duration_secs: u64,
}

fn default_session_duration_secs() -> u64 {
    900
}

/// Why an accounts table or its secrets are unusable.
#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    /// A value breaks a rule.
    #[error("{key} = {value:?}: {rule}")]
    Invalid {
        /// The key, `accounts."<id>".role_arn`.
        key: String,
        /// The value given (never a secret).
        value: String,
        /// The rule.
        rule: String,
    },
    /// An external id could not be read.
    #[error("{key}: cannot read the external id from {from}")]
    ExternalId {
        /// The key.
        key: String,
        /// The file or variable (never its contents).
        from: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Checks the table: keys are account ids, role ARNs name that account in the gateway's
/// partition (when its region is known), durations are in range, at most one external id source.
pub fn validate_accounts(
    accounts: &BTreeMap<String, AccountConfig>,
    region: Option<&str>,
) -> Result<(), AccountsError> {
    let partition = region
        .and_then(|r| Region::parse(r).ok())
        .map(|r| Partition::of_region(&r));
    for (id, account) in accounts {
        let key = |field: &str| format!("accounts.\"{id}\".{field}");
        let invalid = |field: &str, value: &str, rule: &str| AccountsError::Invalid {
            key: key(field),
            value: value.to_owned(),
            rule: rule.to_owned(),
        };
        AccountId::parse(id).map_err(|e| AccountsError::Invalid {
            key: format!("accounts.\"{id}\""),
            value: id.clone(),
            rule: format!("the table's keys are consumer account ids: {e}"),
        })?;
        let role = RoleArn::parse(&account.role_arn)
            .map_err(|e| invalid("role_arn", &account.role_arn, &e.to_string()))?;
        let role_partition = role.partition;
        if role.account.as_str() != id {
            return Err(invalid(
                "role_arn",
                &account.role_arn,
                &format!("the role must be in account {id}, the table's key"),
            ));
        }
        if let Some(partition) = partition
            && role_partition != partition
        {
            return Err(invalid(
                "role_arn",
                &account.role_arn,
                &format!(
                    "the role is in partition {role_partition}, the gateway's region in {partition}"
                ),
            ));
        }
        if !(900..=43_200).contains(&account.session_duration_secs) {
            return Err(invalid(
                "session_duration_secs",
                &account.session_duration_secs.to_string(),
                "must be 900 to 43200",
            ));
        }
        if account.external_id_env.is_some() && account.external_id_file.is_some() {
            return Err(invalid(
                "external_id_env",
                account.external_id_env.as_deref().unwrap_or_default(),
                "give external_id_env or external_id_file, not both",
            ));
        }
    }
    Ok(())
}

/// How the gateway reaches one consumer account.
#[derive(Clone, Debug)]
pub enum Route {
    /// With its own credentials (the single-account form, `upstream.consumer_account`).
    OwnCredentials,
    /// Through a role session per caller.
    Role(RoleTarget),
}

/// Every account the gateway serves.
#[derive(Clone, Debug, Default)]
pub struct Accounts {
    routes: HashMap<AccountId, Route>,
}

impl Accounts {
    /// The table, with its external ids read now; `own` is `upstream.consumer_account`.
    pub fn load(
        table: &BTreeMap<String, AccountConfig>,
        own: Option<&AccountId>,
    ) -> Result<Self, AccountsError> {
        let mut routes = HashMap::new();
        if let Some(own) = own {
            routes.insert(own.clone(), Route::OwnCredentials);
        }
        for (id, account) in table {
            let account_id = AccountId::parse(id).map_err(|e| AccountsError::Invalid {
                key: format!("accounts.\"{id}\""),
                value: id.clone(),
                rule: e.to_string(),
            })?;
            let external_id = external_id(id, account)?;
            routes.insert(
                account_id,
                Route::Role(RoleTarget::new(
                    account.role_arn.clone(),
                    external_id,
                    Duration::from_secs(account.session_duration_secs),
                )),
            );
        }
        Ok(Accounts { routes })
    }

    /// How to reach `account`, if the gateway serves it.
    pub fn route(&self, account: &AccountId) -> Option<&Route> {
        self.routes.get(account)
    }

    /// The accounts served, sorted (for the `dev` banner and logs).
    pub fn served(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.routes.keys().map(ToString::to_string).collect();
        ids.sort();
        ids
    }
}

fn external_id(id: &str, account: &AccountConfig) -> Result<Option<String>, AccountsError> {
    if let Some(var) = &account.external_id_env {
        let value = std::env::var(var).map_err(|_| AccountsError::ExternalId {
            key: format!("accounts.\"{id}\".external_id_env"),
            from: format!("${var}"),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "not set"),
        })?;
        return Ok(Some(value.trim_end().to_owned()));
    }
    if let Some(path) = &account.external_id_file {
        let value = std::fs::read_to_string(path).map_err(|source| AccountsError::ExternalId {
            key: format!("accounts.\"{id}\".external_id_file"),
            from: path.display().to_string(),
            source,
        })?;
        return Ok(Some(value.trim_end().to_owned()));
    }
    Ok(None)
}

/// Refuses calls into an account the gateway does not serve: after policy (a denial is the
/// answer to a call policy forbids), before the write-ahead intent (nothing was attempted),
/// and before STS and Redshift.
#[derive(Clone, Debug)]
pub struct RequireServedAccount {
    accounts: Arc<Accounts>,
}

impl RequireServedAccount {
    /// Refuses accounts outside `accounts`.
    pub fn new(accounts: Arc<Accounts>) -> Self {
        RequireServedAccount { accounts }
    }
}

impl<Op: Operation> Middleware<Op, Permitted<Op::Request>> for RequireServedAccount {
    type Out = Permitted<Op::Request>;

    fn handle<S, F>(
        &self,
        call: Call<Op, Permitted<Op::Request>>,
        mut next: S,
    ) -> CallFuture<Op::Reply>
    where
        S: Service<Call<Op, Self::Out>, Response = Op::Reply, Error = GatewayError, Future = F>
            + Send
            + 'static,
        F: std::future::Future<Output = Result<Op::Reply, GatewayError>> + Send + 'static,
    {
        // Calls that act in no consumer account (the approvals service's) pass.
        let Some(account) = Op::consumer_account(call.stage.request()) else {
            return Box::pin(next.call(call));
        };
        if self.accounts.route(account).is_none() {
            let account = account.to_string();
            return Box::pin(async move { Err(GatewayError::AccountNotConfigured { account }) });
        }
        Box::pin(next.call(call))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(id: &str, role_arn: &str) -> BTreeMap<String, AccountConfig> {
        BTreeMap::from([(
            id.to_owned(),
            AccountConfig {
                role_arn: role_arn.into(),
                external_id_env: None,
                external_id_file: None,
                session_duration_secs: 900,
            },
        )])
    }

    #[test]
    fn role_arns_must_name_their_account_in_the_gateways_partition() {
        let ok = table(
            "444455556666",
            "arn:aws:iam::444455556666:role/datashare-gateway",
        );
        assert!(validate_accounts(&ok, Some("us-east-1")).is_ok());
        let other_account = table("444455556666", "arn:aws:iam::777788889999:role/x");
        let err = validate_accounts(&other_account, Some("us-east-1")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("accounts.\"444455556666\".role_arn"),
            "{err}"
        );
        let china = table("444455556666", "arn:aws-cn:iam::444455556666:role/x");
        let err = validate_accounts(&china, Some("us-east-1")).unwrap_err();
        assert!(err.to_string().contains("partition aws-cn"), "{err}");
        assert!(validate_accounts(&china, Some("cn-north-1")).is_ok());
        let not_a_role = table("444455556666", "arn:aws:iam::444455556666:user/x");
        assert!(validate_accounts(&not_a_role, None).is_err());
        let bad_key = table("4444", "arn:aws:iam::444455556666:role/x");
        assert!(validate_accounts(&bad_key, None).is_err());
    }

    #[test]
    fn durations_and_external_id_sources_are_checked() {
        let mut t = table("444455556666", "arn:aws:iam::444455556666:role/r");
        t.get_mut("444455556666").unwrap().session_duration_secs = 60;
        let err = validate_accounts(&t, None).unwrap_err();
        assert!(err.to_string().contains("session_duration_secs"), "{err}");
        let mut t = table("444455556666", "arn:aws:iam::444455556666:role/r");
        let entry = t.get_mut("444455556666").unwrap();
        entry.external_id_env = Some("X".into());
        entry.external_id_file = Some("/x".into());
        assert!(validate_accounts(&t, None).is_err());
    }

    #[test]
    fn the_external_id_file_is_read_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("external-id");
        std::fs::write(&file, "s3cret-external-id\n").unwrap();
        let mut t = table("444455556666", "arn:aws:iam::444455556666:role/r");
        t.get_mut("444455556666").unwrap().external_id_file = Some(file);
        let accounts = Accounts::load(&t, None).unwrap();
        let Some(Route::Role(role)) = accounts.route(&AccountId::parse("444455556666").unwrap())
        else {
            panic!("a role route");
        };
        assert_eq!(role.external_id.as_deref(), Some("s3cret-external-id"));
        assert!(!format!("{accounts:?}").contains("s3cret"));
        let missing = {
            let mut t = t.clone();
            t.get_mut("444455556666").unwrap().external_id_file = Some(dir.path().join("nope"));
            Accounts::load(&t, None).unwrap_err()
        };
        assert!(
            missing
                .to_string()
                .starts_with("accounts.\"444455556666\".external_id_file"),
            "{missing}"
        );
    }
}
