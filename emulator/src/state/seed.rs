//! Building the state from fixtures: at start, on `POST /seed` and `POST /grants`, and on
//! `POST /reset`.

use std::sync::{Arc, Mutex, PoisonError};

use time::OffsetDateTime;

use super::model::{Association, Grant, Namespace, Share, Target};
use super::{Store, lock};
use crate::EmulatorError;
use crate::arn::{AccountId, ArnError, DataShareArn, NamespaceArn, NamespaceGuid, NamespaceKind};
use crate::fixtures::{
    AssociationFixture, DataShareFixture, Fixtures, GrantFixture, NamespaceKindFixture,
};

impl Store {
    /// Replaces everything with `fixtures`.
    pub(crate) fn reset(&self, fixtures: &Fixtures) -> Result<(), EmulatorError> {
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

    /// Adds (or replaces) namespaces and datashares. A datashare that already exists is
    /// replaced as a whole.
    pub(crate) fn seed(&self, fixtures: &Fixtures) -> Result<(), EmulatorError> {
        fixtures.validate()?;
        let now = OffsetDateTime::now_utc();
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
}

fn invalid(key: &str, value: &str, err: ArnError) -> EmulatorError {
    EmulatorError::InvalidFixture {
        key: key.to_owned(),
        value: value.to_owned(),
        rule: err.to_string(),
    }
}
