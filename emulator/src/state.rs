//! Datashares, grants and associations, as Redshift keeps them, and the transitions between
//! them. Each rule says whether it comes from the service model's documentation ("model"),
//! from the team's API notes of observed AWS behaviour ("api doc"), or is an assumption.
//!
//! Locking: the index (`shares`) is a `RwLock` taken for reading on every call and for writing
//! only when seeding; each datashare has its own `Mutex`, so calls on unrelated datashares never
//! wait for each other.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use serde::Serialize;
use time::OffsetDateTime;

use super::EmulatorError;
use super::arn::{
    AccountId, ArnError, DataShareArn, NamespaceArn, NamespaceGuid, NamespaceKind, Region,
};
use super::fixtures::{
    AssociationFixture, DataShareFixture, Fixtures, GrantFixture, GrantStatus, NamespaceKindFixture,
};
use super::protocol::AwsError;
use super::sigv4::{KeyHolder, KeyInfo};

/// `DataShareStatus` values (model enum).
pub(crate) const ACTIVE: &str = "ACTIVE";
pub(crate) const AVAILABLE: &str = "AVAILABLE";
pub(crate) const AUTHORIZED: &str = "AUTHORIZED";
pub(crate) const PENDING_AUTHORIZATION: &str = "PENDING_AUTHORIZATION";
pub(crate) const DEAUTHORIZED: &str = "DEAUTHORIZED";
pub(crate) const REJECTED: &str = "REJECTED";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a share lock leaves plain data behind; keep serving it.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What an association covers on the consumer side.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub(crate) enum Target {
    /// `AssociateEntireAccount=true`.
    EntireAccount,
    /// `ConsumerArn=<namespace ARN>`.
    Namespace(String),
    /// `ConsumerRegion=<region>`.
    Region(String),
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct Association {
    pub(crate) target: Target,
    pub(crate) consumer_accepted_writes: Option<bool>,
    #[serde(serialize_with = "ts")]
    pub(crate) created: OffsetDateTime,
    #[serde(serialize_with = "ts")]
    pub(crate) status_changed: OffsetDateTime,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct Grant {
    pub(crate) consumer: String,
    pub(crate) status: GrantStatus,
    pub(crate) producer_allowed_writes: Option<bool>,
    #[serde(serialize_with = "ts")]
    pub(crate) created: OffsetDateTime,
    #[serde(serialize_with = "ts")]
    pub(crate) status_changed: OffsetDateTime,
    pub(crate) associations: Vec<Association>,
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct Share {
    pub(crate) arn: String,
    pub(crate) producer_arn: String,
    #[serde(skip)]
    pub(crate) producer_account: String,
    pub(crate) allow_publicly_accessible_consumers: bool,
    pub(crate) managed_by: Option<String>,
    pub(crate) data_share_type: Option<String>,
    pub(crate) grants: Vec<Grant>,
}

/// One `DataShareAssociation` as a caller sees it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct AssociationView {
    pub(crate) consumer_identifier: String,
    pub(crate) status: &'static str,
    pub(crate) consumer_region: Option<String>,
    pub(crate) created: OffsetDateTime,
    pub(crate) status_changed: OffsetDateTime,
    pub(crate) producer_allowed_writes: Option<bool>,
    pub(crate) consumer_accepted_writes: Option<bool>,
}

/// One `DataShare` as a caller sees it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct DataShareView {
    pub(crate) arn: String,
    pub(crate) producer_arn: String,
    pub(crate) allow_publicly_accessible_consumers: bool,
    pub(crate) associations: Vec<AssociationView>,
    pub(crate) managed_by: Option<String>,
    pub(crate) data_share_type: Option<String>,
}

impl Grant {
    fn new(consumer: &str, now: OffsetDateTime) -> Self {
        Grant {
            consumer: consumer.to_owned(),
            status: GrantStatus::PendingAuthorization,
            producer_allowed_writes: None,
            created: now,
            status_changed: now,
            associations: Vec::new(),
        }
    }

    fn set_status(&mut self, status: GrantStatus, now: OffsetDateTime) {
        self.status = status;
        self.status_changed = now;
    }

    /// The association rows this grant contributes. `authorized_status` is what an authorized,
    /// unassociated grant reads as: AUTHORIZED for the producer, AVAILABLE for the consumer
    /// (api doc §9 transition 2).
    fn rows(&self, authorized_status: &'static str) -> Vec<AssociationView> {
        let row = |status| AssociationView {
            consumer_identifier: self.consumer.clone(),
            status,
            consumer_region: None,
            created: self.created,
            status_changed: self.status_changed,
            producer_allowed_writes: self.producer_allowed_writes,
            consumer_accepted_writes: None,
        };
        match self.status {
            GrantStatus::PendingAuthorization => vec![row(PENDING_AUTHORIZATION)],
            GrantStatus::Deauthorized => vec![row(DEAUTHORIZED)],
            GrantStatus::Rejected => vec![row(REJECTED)],
            GrantStatus::Authorized if self.associations.is_empty() => vec![row(authorized_status)],
            // Each association reads ACTIVE on both sides (api doc §9 transition 3). An account
            // or region association is identified by the account id, a namespace association by
            // the namespace ARN (assumption for the region case).
            GrantStatus::Authorized => self
                .associations
                .iter()
                .map(|a| AssociationView {
                    consumer_identifier: match &a.target {
                        Target::Namespace(arn) => arn.clone(),
                        Target::EntireAccount | Target::Region(_) => self.consumer.clone(),
                    },
                    status: ACTIVE,
                    consumer_region: match &a.target {
                        Target::Region(r) => Some(r.clone()),
                        _ => None,
                    },
                    created: a.created,
                    status_changed: a.status_changed,
                    producer_allowed_writes: self.producer_allowed_writes,
                    consumer_accepted_writes: a.consumer_accepted_writes,
                })
                .collect(),
        }
    }
}

impl Share {
    fn view(&self, associations: Vec<AssociationView>) -> DataShareView {
        DataShareView {
            arn: self.arn.clone(),
            producer_arn: self.producer_arn.clone(),
            allow_publicly_accessible_consumers: self.allow_publicly_accessible_consumers,
            associations,
            managed_by: self.managed_by.clone(),
            data_share_type: self.data_share_type.clone(),
        }
    }

    /// The producer sees every consumer (api doc §9 transition 7).
    pub(crate) fn producer_view(&self) -> DataShareView {
        self.view(
            self.grants
                .iter()
                .flat_map(|g| g.rows(AUTHORIZED))
                .collect(),
        )
    }

    /// A consumer sees only its own rows (api doc §9 transition 7).
    pub(crate) fn consumer_view(&self, account: &str) -> DataShareView {
        self.view(
            self.grants
                .iter()
                .filter(|g| g.consumer == account)
                .flat_map(|g| g.rows(AVAILABLE))
                .collect(),
        )
    }

    fn grant_mut(&mut self, consumer: &str) -> Option<&mut Grant> {
        self.grants.iter_mut().find(|g| g.consumer == consumer)
    }

    /// The caller's grant when the share is AVAILABLE or ACTIVE to it.
    fn authorized_grant(&self, account: &str) -> Option<&Grant> {
        self.grants
            .iter()
            .find(|g| g.consumer == account && g.status == GrantStatus::Authorized)
    }
}

/// A namespace the emulator knows.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Namespace {
    pub(crate) arn: String,
    pub(crate) account: String,
}

/// The consumer-side target of an associate or disassociate call, still unvalidated.
#[derive(Debug)]
pub(crate) struct TargetParams<'a> {
    pub(crate) entire_account: Option<bool>,
    pub(crate) consumer_arn: Option<&'a str>,
    pub(crate) consumer_region: Option<&'a str>,
}

/// The emulator's whole state for one region.
#[derive(Debug)]
pub(crate) struct Store {
    region: Region,
    keys: RwLock<HashMap<String, KeyInfo>>,
    namespaces: RwLock<HashMap<String, Namespace>>,
    shares: RwLock<BTreeMap<String, Arc<Mutex<Share>>>>,
}

fn not_found(arn: &str) -> AwsError {
    // Message from real AWS (api doc §4, via the Terraform provider).
    AwsError::invalid_datashare(format!(
        "The datashare {arn} can't be found because the ARN doesn't exist."
    ))
}

fn not_associated(arn: &str) -> AwsError {
    // Message from real AWS (api doc §4, via the Terraform provider).
    AwsError::invalid_datashare(format!(
        "The datashare {arn} either doesn't exist or isn't associated with this data consumer."
    ))
}

impl Store {
    pub(crate) fn new(region: Region, fixtures: &Fixtures) -> Result<Self, EmulatorError> {
        let store = Store {
            region,
            keys: RwLock::new(HashMap::new()),
            namespaces: RwLock::new(HashMap::new()),
            shares: RwLock::new(BTreeMap::new()),
        };
        store.seed(fixtures)?;
        Ok(store)
    }

    pub(crate) fn region(&self) -> &str {
        self.region.as_str()
    }

    /// Replaces everything with `fixtures`.
    pub(crate) fn reset(&self, fixtures: &Fixtures) -> Result<(), EmulatorError> {
        self.keys
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.namespaces
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.shares
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.seed(fixtures)
    }

    pub(crate) fn key(&self, access_key_id: &str) -> Option<KeyInfo> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(access_key_id)
            .cloned()
    }

    /// Adds (or replaces) keys, namespaces and datashares. A datashare that already exists is
    /// replaced as a whole.
    pub(crate) fn seed(&self, fixtures: &Fixtures) -> Result<(), EmulatorError> {
        fixtures.validate()?;
        let now = OffsetDateTime::now_utc();
        {
            let mut keys = self.keys.write().unwrap_or_else(PoisonError::into_inner);
            for k in &fixtures.keys {
                keys.insert(
                    k.access_key_id.clone(),
                    KeyInfo {
                        account: k.account.clone(),
                        secret: k.secret_access_key.clone(),
                        session_token: k.session_token.clone(),
                        holder: KeyHolder::User {
                            name: k.user_name().to_owned(),
                        },
                    },
                );
            }
        }
        {
            let mut namespaces = self
                .namespaces
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            for ns in &fixtures.namespaces {
                let account = AccountId::parse(&ns.account)
                    .map_err(|e| invalid("account", &ns.account, e))?;
                let guid =
                    NamespaceGuid::parse(&ns.guid).map_err(|e| invalid("guid", &ns.guid, e))?;
                let kind = match ns.kind {
                    NamespaceKindFixture::Provisioned => NamespaceKind::Provisioned,
                    NamespaceKindFixture::Serverless => NamespaceKind::Serverless,
                };
                let arn = NamespaceArn::new(self.region.clone(), account, guid.clone(), kind);
                namespaces.insert(
                    guid.as_str().to_owned(),
                    Namespace {
                        arn: arn.to_string(),
                        account: ns.account.clone(),
                    },
                );
            }
        }
        for share in &fixtures.datashares {
            let built = self.build_share(share, now)?;
            self.shares
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(built.arn.clone(), Arc::new(Mutex::new(built)));
        }
        Ok(())
    }

    /// Adds or replaces the grant to `grant.consumer` on an existing datashare.
    pub(crate) fn seed_grant(&self, arn: &str, grant: &GrantFixture) -> Result<(), EmulatorError> {
        let share = self.share(arn).map_err(|_| EmulatorError::InvalidFixture {
            key: "datashare_arn".into(),
            value: arn.to_owned(),
            rule: "must be the ARN of a datashare the emulator holds".into(),
        })?;
        if grant.consumer.is_empty() {
            return Err(EmulatorError::InvalidFixture {
                key: "consumer".into(),
                value: String::new(),
                rule: "must be an account id or a keyword such as ADX".into(),
            });
        }
        for assoc in &grant.associations {
            if let Some(ns) = &assoc.consumer_arn {
                NamespaceArn::parse(ns).map_err(|e| invalid("associations.consumer_arn", ns, e))?;
            }
        }
        let built = self.build_grant(grant, OffsetDateTime::now_utc())?;
        let mut share = lock(&share);
        match share.grant_mut(&grant.consumer) {
            Some(existing) => *existing = built,
            None => share.grants.push(built),
        }
        Ok(())
    }

    fn build_share(
        &self,
        f: &DataShareFixture,
        now: OffsetDateTime,
    ) -> Result<Share, EmulatorError> {
        let guid = NamespaceGuid::parse(&f.producer_namespace)
            .map_err(|e| invalid("producer_namespace", &f.producer_namespace, e))?;
        let ns = self
            .namespaces
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(guid.as_str())
            .cloned()
            .ok_or_else(|| EmulatorError::InvalidFixture {
                key: "datashares.producer_namespace".into(),
                value: f.producer_namespace.clone(),
                rule: "must name a namespace listed in namespaces".into(),
            })?;
        let account =
            AccountId::parse(&ns.account).map_err(|e| invalid("account", &ns.account, e))?;
        // A name that could not appear in an ARN is refused here, not on first use.
        let arn = DataShareArn::new(self.region.clone(), account, guid, &f.name)
            .map_err(|e| invalid("datashares.name", &f.name, e))?
            .to_string();
        let grants = f
            .grants
            .iter()
            .map(|g| self.build_grant(g, now))
            .collect::<Result<_, _>>()?;
        Ok(Share {
            arn,
            producer_arn: ns.arn,
            producer_account: ns.account,
            allow_publicly_accessible_consumers: f.allow_publicly_accessible_consumers,
            managed_by: f.managed_by.clone(),
            data_share_type: f.data_share_type.clone(),
            grants,
        })
    }

    fn build_grant(&self, g: &GrantFixture, now: OffsetDateTime) -> Result<Grant, EmulatorError> {
        let mut grant = Grant::new(&g.consumer, now);
        grant.status = g.status;
        grant.producer_allowed_writes = g.allow_writes;
        for a in &g.associations {
            grant.associations.push(self.build_association(a, now));
        }
        Ok(grant)
    }

    fn build_association(&self, a: &AssociationFixture, now: OffsetDateTime) -> Association {
        let target = match (&a.consumer_arn, &a.consumer_region) {
            (Some(arn), _) => Target::Namespace(arn.clone()),
            (None, Some(region)) => Target::Region(region.clone()),
            (None, None) => Target::EntireAccount,
        };
        Association {
            target,
            consumer_accepted_writes: a.allow_writes,
            created: now,
            status_changed: now,
        }
    }

    /// Looks up a share by ARN text; a malformed ARN is reported like an unknown one
    /// (assumption: AWS's answer to a malformed ARN has not been observed).
    fn share(&self, arn: &str) -> Result<Arc<Mutex<Share>>, AwsError> {
        let parsed = DataShareArn::parse(arn).map_err(|_| not_found(arn))?;
        self.shares
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&parsed.to_string())
            .cloned()
            .ok_or_else(|| not_found(arn))
    }

    fn all_shares(&self) -> Vec<Arc<Mutex<Share>>> {
        self.shares
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// A namespace ARN that exists and belongs to `account`, else `InvalidNamespaceFault`
    /// (model: "The namespace isn't valid because the namespace doesn't exist"; that another
    /// account's namespace is treated the same is an assumption).
    fn own_namespace(&self, arn: &str, account: &str) -> Result<String, AwsError> {
        let bad = || {
            AwsError::invalid_namespace(format!(
                "The namespace {arn} isn't valid because the namespace doesn't exist. Provide a valid namespace."
            ))
        };
        let parsed = NamespaceArn::parse(arn).map_err(|_| bad())?;
        let namespaces = self
            .namespaces
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        match namespaces.get(parsed.guid().as_str()) {
            Some(ns) if ns.arn == parsed.to_string() && ns.account == account => Ok(ns.arn.clone()),
            _ => Err(bad()),
        }
    }

    /// Exactly one of entire account (true), ConsumerArn, ConsumerRegion. Neither the model nor
    /// the API reference says so; Terraform enforces ExactlyOneOf (api doc §9), and the error
    /// code `InvalidParameterCombination` is an assumption. `...EntireAccount=false` counts as
    /// not given (assumption).
    fn target(&self, p: &TargetParams<'_>, account: &str, verb: &str) -> Result<Target, AwsError> {
        let given = usize::from(p.entire_account == Some(true))
            + usize::from(p.consumer_arn.is_some())
            + usize::from(p.consumer_region.is_some());
        if given != 1 {
            return Err(AwsError::invalid_combination(format!(
                "Specify exactly one of {verb}EntireAccount=true, ConsumerArn or ConsumerRegion."
            )));
        }
        if let Some(arn) = p.consumer_arn {
            return Ok(Target::Namespace(self.own_namespace(arn, account)?));
        }
        if let Some(region) = p.consumer_region {
            // A region that is not a region name → InvalidParameterValue (assumption).
            Region::parse(region).map_err(|_| AwsError::invalid_value("ConsumerRegion", region))?;
            return Ok(Target::Region(region.to_owned()));
        }
        Ok(Target::EntireAccount)
    }

    /// AuthorizeDataShare (model: "From a data producer account, authorizes the sharing of a
    /// datashare with one or more consumer accounts").
    pub(crate) fn authorize(
        &self,
        caller: &str,
        arn: &str,
        consumer: &str,
        allow_writes: Option<bool>,
    ) -> Result<DataShareView, AwsError> {
        let share = self.share(arn)?;
        let mut share = lock(&share);
        // Only the owning account can authorize; to anyone else the share does not exist
        // (api doc §9 transition 2).
        if share.producer_account != caller {
            return Err(not_found(arn));
        }
        let now = OffsetDateTime::now_utc();
        let Some(grant) = share.grant_mut(consumer) else {
            // Usage never granted to the consumer → InvalidDataShareFault (api doc §9
            // transition 2; the message is an assumption).
            return Err(AwsError::invalid_datashare(format!(
                "The datashare {arn} can't be authorized for {consumer} because usage on it has not been granted to that consumer."
            )));
        };
        // From PENDING_AUTHORIZATION, and again after REJECTED or DEAUTHORIZED (api doc §9
        // transition 2). Authorizing an already authorized grant succeeds and only updates
        // ProducerAllowedWrites (assumption).
        if grant.status != GrantStatus::Authorized {
            grant.set_status(GrantStatus::Authorized, now);
        } else {
            grant.status_changed = now;
        }
        grant.producer_allowed_writes = allow_writes;
        Ok(share.producer_view())
    }

    /// DeauthorizeDataShare (model: "removes authorization from the specified datashare").
    pub(crate) fn deauthorize(
        &self,
        caller: &str,
        arn: &str,
        consumer: &str,
    ) -> Result<DataShareView, AwsError> {
        let share = self.share(arn)?;
        let mut share = lock(&share);
        if share.producer_account != caller {
            return Err(not_found(arn));
        }
        let now = OffsetDateTime::now_utc();
        let Some(grant) = share.grant_mut(consumer) else {
            // Assumption: a consumer never granted reads like an unknown share.
            return Err(not_found(arn));
        };
        if grant.status == GrantStatus::Deauthorized {
            // Message from real AWS (api doc §4).
            return Err(AwsError::invalid_datashare(format!(
                "The datashare {arn} can't be deauthorized because you have already removed authorization from the data share."
            )));
        }
        // The consumer loses access immediately, so its associations go (api doc §9 transition 6).
        grant.associations.clear();
        grant.set_status(GrantStatus::Deauthorized, now);
        Ok(share.producer_view())
    }

    /// AssociateDataShareConsumer (model: "From a datashare consumer account, associates a
    /// datashare with the account (AssociateEntireAccount) or the specified namespace (ConsumerArn)").
    pub(crate) fn associate(
        &self,
        caller: &str,
        arn: &str,
        target: &TargetParams<'_>,
        allow_writes: Option<bool>,
    ) -> Result<DataShareView, AwsError> {
        let target = self.target(target, caller, "Associate")?;
        let share = self.share(arn)?;
        let mut share = lock(&share);
        // Only when AVAILABLE or ACTIVE for the caller's account (api doc §9 transition 3).
        if share.authorized_grant(caller).is_none() {
            return Err(AwsError::invalid_datashare(format!(
                "The datashare {arn} isn't available to account {caller}. It must be authorized by the producer before it can be associated."
            )));
        }
        let now = OffsetDateTime::now_utc();
        if let Some(grant) = share.grant_mut(caller) {
            match grant.associations.iter_mut().find(|a| a.target == target) {
                // Associating the same target again updates it (assumption).
                Some(existing) => {
                    existing.consumer_accepted_writes = allow_writes;
                    existing.status_changed = now;
                }
                None => grant.associations.push(Association {
                    target,
                    consumer_accepted_writes: allow_writes,
                    created: now,
                    status_changed: now,
                }),
            }
        }
        Ok(share.consumer_view(caller))
    }

    /// DisassociateDataShareConsumer (model: "From a datashare consumer account, remove
    /// association for the specified datashare").
    pub(crate) fn disassociate(
        &self,
        caller: &str,
        arn: &str,
        target: &TargetParams<'_>,
    ) -> Result<DataShareView, AwsError> {
        let target = self.target(target, caller, "Disassociate")?;
        let share = self.share(arn)?;
        let mut share = lock(&share);
        let Some(grant) = share
            .grant_mut(caller)
            .filter(|g| g.status == GrantStatus::Authorized)
        else {
            return Err(not_associated(arn));
        };
        let Some(pos) = grant.associations.iter().position(|a| a.target == target) else {
            // Not associated → InvalidDataShareFault (api doc §9 transition 4).
            return Err(not_associated(arn));
        };
        grant.associations.remove(pos);
        // Back to AVAILABLE for the consumer, AUTHORIZED for the producer when nothing is
        // left (api doc §9 transition 4, inferred there).
        grant.status_changed = OffsetDateTime::now_utc();
        Ok(share.consumer_view(caller))
    }

    /// RejectDataShare (model: "From a datashare consumer account, rejects the specified datashare").
    pub(crate) fn reject(&self, caller: &str, arn: &str) -> Result<DataShareView, AwsError> {
        let share = self.share(arn)?;
        let mut share = lock(&share);
        let now = OffsetDateTime::now_utc();
        // Allowed from AVAILABLE or ACTIVE only (api doc §9 transition 5).
        let Some(grant) = share
            .grant_mut(caller)
            .filter(|g| g.status == GrantStatus::Authorized)
        else {
            return Err(AwsError::invalid_datashare(format!(
                "The datashare {arn} can't be rejected because it isn't available to this data consumer."
            )));
        };
        grant.associations.clear();
        grant.set_status(GrantStatus::Rejected, now);
        Ok(share.consumer_view(caller))
    }

    /// DescribeDataShares (model: "Shows the status of any inbound or outbound datashares
    /// available in the specified account").
    pub(crate) fn describe(
        &self,
        caller: &str,
        arn: Option<&str>,
    ) -> Result<Vec<DataShareView>, AwsError> {
        let shares = match arn {
            Some(arn) => vec![self.share(arn)?],
            None => self.all_shares(),
        };
        let mut out = Vec::new();
        for share in shares {
            let share = lock(&share);
            if share.producer_account == caller {
                out.push(share.producer_view());
            } else if share.authorized_grant(caller).is_some() {
                // Inbound shares are visible while AVAILABLE or ACTIVE (assumption: REJECTED,
                // DEAUTHORIZED and PENDING_AUTHORIZATION ones are not).
                out.push(share.consumer_view(caller));
            } else if let Some(arn) = arn {
                return Err(not_associated(arn));
            }
        }
        Ok(out)
    }

    /// DescribeDataSharesForProducer (model: "Returns a list of datashares when the account
    /// identifier being called is a producer account identifier").
    pub(crate) fn describe_for_producer(
        &self,
        caller: &str,
        producer_arn: Option<&str>,
        status: Option<&str>,
    ) -> Result<Vec<DataShareView>, AwsError> {
        let producer = producer_arn
            .map(|a| self.own_namespace(a, caller))
            .transpose()?;
        let mut out = Vec::new();
        for share in self.all_shares() {
            let share = lock(&share);
            if share.producer_account != caller
                || producer.as_ref().is_some_and(|p| *p != share.producer_arn)
            {
                continue;
            }
            let view = share.producer_view();
            // "returns the list of datashares that have the specified status" (model): a share
            // matches when any association has it; the whole share is returned (assumption).
            if status.is_none_or(|s| view.associations.iter().any(|a| a.status == s)) {
                out.push(view);
            }
        }
        Ok(out)
    }

    /// DescribeDataSharesForConsumer (model: "Returns a list of datashares where the account
    /// identifier being called is a consumer account identifier").
    pub(crate) fn describe_for_consumer(
        &self,
        caller: &str,
        consumer_arn: Option<&str>,
        status: Option<&str>,
    ) -> Result<Vec<DataShareView>, AwsError> {
        let namespace = consumer_arn
            .map(|a| self.own_namespace(a, caller))
            .transpose()?;
        let mut out = Vec::new();
        for share in self.all_shares() {
            let share = lock(&share);
            // REJECTED and DEAUTHORIZED shares are not returned (api doc §9 transition 5).
            let Some(grant) = share.authorized_grant(caller) else {
                continue;
            };
            // With ConsumerArn: shares ACTIVE for that namespace (by namespace, region or
            // entire account), and shares still AVAILABLE to the account (assumption).
            if let Some(ns) = &namespace {
                let covers = grant.associations.is_empty()
                    || grant.associations.iter().any(|a| match &a.target {
                        Target::EntireAccount => true,
                        Target::Namespace(arn) => arn == ns,
                        Target::Region(r) => {
                            NamespaceArn::parse(ns).is_ok_and(|n| n.region().as_str() == r)
                        }
                    });
                if !covers {
                    continue;
                }
            }
            let view = share.consumer_view(caller);
            if status.is_none_or(|s| view.associations.iter().any(|a| a.status == s)) {
                out.push(view);
            }
        }
        Ok(out)
    }

    /// The whole state, for the admin API.
    pub(crate) fn snapshot(&self) -> serde_json::Value {
        let namespaces: BTreeMap<String, Namespace> = self
            .namespaces
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|n| (n.arn.clone(), n.clone()))
            .collect();
        let shares: Vec<Share> = self.all_shares().iter().map(|s| lock(s).clone()).collect();
        let keys: BTreeMap<String, String> = self
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| (k.clone(), v.account.clone()))
            .collect();
        serde_json::json!({
            "region": self.region.as_str(),
            "access_keys": keys,
            "namespaces": namespaces.into_values().collect::<Vec<_>>(),
            "datashares": shares,
        })
    }
}

fn ts<S: serde::Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&super::protocol::format_timestamp(*t))
}

fn invalid(key: &str, value: &str, err: ArnError) -> EmulatorError {
    EmulatorError::InvalidFixture {
        key: key.to_owned(),
        value: value.to_owned(),
        rule: err.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRODUCER: &str = "111122223333";
    const CONSUMER: &str = "444455556666";
    const SALES: &str = "arn:aws:redshift:us-east-1:111122223333:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/sales_share";
    const FINANCE: &str = "arn:aws:redshift:us-east-1:111122223333:datashare:9c7a6f30-1b2c-4d5e-8f90-0a1b2c3d4e5f/finance_share";
    const NS: &str =
        "arn:aws:redshift:us-east-1:444455556666:namespace:5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9";

    fn store() -> Store {
        Store::new(
            Region::parse("us-east-1").unwrap(),
            &Fixtures::dev().unwrap(),
        )
        .unwrap()
    }

    fn account() -> TargetParams<'static> {
        TargetParams {
            entire_account: Some(true),
            consumer_arn: None,
            consumer_region: None,
        }
    }

    fn statuses(v: &DataShareView) -> Vec<&'static str> {
        v.associations.iter().map(|a| a.status).collect()
    }

    #[test]
    fn full_lifecycle_available_active_available_rejected_reauthorized() {
        let s = store();
        let d = s.describe(CONSUMER, Some(SALES)).unwrap();
        assert_eq!(statuses(&d[0]), [AVAILABLE]);

        let v = s
            .associate(CONSUMER, SALES, &account(), Some(true))
            .unwrap();
        assert_eq!(statuses(&v), [ACTIVE]);
        assert_eq!(v.associations[0].consumer_accepted_writes, Some(true));
        // The producer also sees the dev fixtures' second consumer, 777788889999, whose
        // grant stays AUTHORIZED throughout.
        assert_eq!(
            statuses(&s.describe(PRODUCER, Some(SALES)).unwrap()[0]),
            [ACTIVE, AUTHORIZED]
        );

        let v = s.disassociate(CONSUMER, SALES, &account()).unwrap();
        assert_eq!(statuses(&v), [AVAILABLE]);
        assert_eq!(
            statuses(&s.describe(PRODUCER, Some(SALES)).unwrap()[0]),
            [AUTHORIZED, AUTHORIZED]
        );

        let v = s.reject(CONSUMER, SALES).unwrap();
        assert_eq!(statuses(&v), [REJECTED]);
        assert!(
            s.describe_for_consumer(CONSUMER, None, None)
                .unwrap()
                .iter()
                .all(|d| d.arn != SALES)
        );
        assert_eq!(
            s.reject(CONSUMER, SALES).unwrap_err().code,
            "InvalidDataShareFault"
        );

        let v = s.authorize(PRODUCER, SALES, CONSUMER, Some(false)).unwrap();
        assert_eq!(statuses(&v), [AUTHORIZED, AUTHORIZED]);
        assert_eq!(v.associations[0].producer_allowed_writes, Some(false));
    }

    #[test]
    fn associating_needs_authorization_and_exactly_one_target() {
        let s = store();
        assert_eq!(
            s.associate(CONSUMER, FINANCE, &account(), None)
                .unwrap_err()
                .code,
            "InvalidDataShareFault"
        );
        let none = TargetParams {
            entire_account: None,
            consumer_arn: None,
            consumer_region: None,
        };
        assert_eq!(
            s.associate(CONSUMER, SALES, &none, None).unwrap_err().code,
            "InvalidParameterCombination"
        );
        let two = TargetParams {
            entire_account: Some(true),
            consumer_arn: Some(NS),
            consumer_region: None,
        };
        assert_eq!(
            s.associate(CONSUMER, SALES, &two, None).unwrap_err().code,
            "InvalidParameterCombination"
        );
        let other = TargetParams {
            entire_account: None,
            consumer_arn: Some(
                "arn:aws:redshift:us-east-1:777788889999:namespace:7a7b7c7d-7e7f-4a0b-8c1d-2e3f4a5b6c7d",
            ),
            consumer_region: None,
        };
        assert_eq!(
            s.associate(CONSUMER, SALES, &other, None).unwrap_err().code,
            "InvalidNamespaceFault"
        );
        let ns = TargetParams {
            entire_account: None,
            consumer_arn: Some(NS),
            consumer_region: None,
        };
        let v = s.associate(CONSUMER, SALES, &ns, None).unwrap();
        assert_eq!(v.associations[0].consumer_identifier, NS);
    }

    #[test]
    fn deauthorize_twice_and_unknown_shares_fail() {
        let s = store();
        s.deauthorize(PRODUCER, SALES, CONSUMER).unwrap();
        let e = s.deauthorize(PRODUCER, SALES, CONSUMER).unwrap_err();
        assert!(
            e.message.contains("already removed authorization"),
            "{}",
            e.message
        );
        assert_eq!(
            s.associate(CONSUMER, SALES, &account(), None)
                .unwrap_err()
                .code,
            "InvalidDataShareFault"
        );
        let e = s.authorize(CONSUMER, SALES, CONSUMER, None).unwrap_err();
        assert!(e.message.contains("doesn't exist"));
        assert_eq!(
            s.describe(CONSUMER, Some("nonsense")).unwrap_err().code,
            "InvalidDataShareFault"
        );
    }

    #[test]
    fn producer_status_filter_matches_any_association() {
        let s = store();
        let pending = s
            .describe_for_producer(PRODUCER, None, Some(PENDING_AUTHORIZATION))
            .unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].arn, FINANCE);
        assert_eq!(
            s.describe_for_producer(PRODUCER, Some(NS), None)
                .unwrap_err()
                .code,
            "InvalidNamespaceFault"
        );
    }
}
