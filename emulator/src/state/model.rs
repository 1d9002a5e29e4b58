//! What the store holds (shares, their grants and associations, namespaces) and how a caller
//! sees a share from its side.

use serde::Serialize;
use time::OffsetDateTime;

use crate::arn::NamespaceArn;
use crate::fixtures::GrantStatus;
use crate::protocol::format_timestamp;

/// `DataShareStatus` values (model enum).
pub(crate) const ACTIVE: &str = "ACTIVE";
pub(crate) const AVAILABLE: &str = "AVAILABLE";
pub(crate) const AUTHORIZED: &str = "AUTHORIZED";
pub(crate) const PENDING_AUTHORIZATION: &str = "PENDING_AUTHORIZATION";
pub(crate) const DEAUTHORIZED: &str = "DEAUTHORIZED";
pub(crate) const REJECTED: &str = "REJECTED";

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

/// The side of a datashare a caller stands on: `DescribeDataSharesForProducer` asks about
/// the caller's own shares, `…ForConsumer` about the ones shared with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Producer,
    Consumer,
}

impl Grant {
    pub(super) fn new(consumer: &str, now: OffsetDateTime) -> Self {
        Grant {
            consumer: consumer.to_owned(),
            status: GrantStatus::PendingAuthorization,
            producer_allowed_writes: None,
            created: now,
            status_changed: now,
            associations: Vec::new(),
        }
    }

    pub(super) fn set_status(&mut self, status: GrantStatus, now: OffsetDateTime) {
        self.status = status;
        self.status_changed = now;
    }

    /// The association rows this grant contributes. `authorized_status` is what an authorized,
    /// unassociated grant reads as: AUTHORIZED for the producer, AVAILABLE for the consumer
    /// (docs/emulator.md, "Operations and state").
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
            // Each association reads ACTIVE on both sides. An account or region association
            // is identified by the account id, a namespace association by the namespace ARN
            // (assumption for the region case).
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

    /// Whether the share is ACTIVE for namespace `ns` (through the namespace, its region or
    /// the whole account) or still AVAILABLE to the account (assumption).
    fn covers(&self, ns: &str) -> bool {
        self.associations.is_empty()
            || self.associations.iter().any(|a| match &a.target {
                Target::EntireAccount => true,
                Target::Namespace(arn) => arn == ns,
                Target::Region(r) => {
                    NamespaceArn::parse(ns).is_ok_and(|n| n.region().as_str() == r)
                }
            })
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

    /// The producer sees every consumer's rows.
    pub(super) fn producer_view(&self) -> DataShareView {
        self.view(
            self.grants
                .iter()
                .flat_map(|g| g.rows(AUTHORIZED))
                .collect(),
        )
    }

    /// A consumer sees only its own rows.
    pub(super) fn consumer_view(&self, account: &str) -> DataShareView {
        self.view(
            self.grants
                .iter()
                .filter(|g| g.consumer == account)
                .flat_map(|g| g.rows(AVAILABLE))
                .collect(),
        )
    }

    /// The share as `account` sees it from `side`, or `None` when it is not one of the
    /// account's shares on that side. With `namespace` (a namespace ARN of the account's), only
    /// a share that namespace produces (producer) or can use (consumer).
    pub(super) fn seen_from(
        &self,
        side: Side,
        account: &str,
        namespace: Option<&str>,
    ) -> Option<DataShareView> {
        match side {
            Side::Producer => (self.producer_account == account
                && namespace.is_none_or(|ns| ns == self.producer_arn))
            .then(|| self.producer_view()),
            Side::Consumer => {
                // Inbound shares are visible while AVAILABLE or ACTIVE (assumption: REJECTED,
                // DEAUTHORIZED and PENDING_AUTHORIZATION ones are not).
                let grant = self.authorized_grant(account)?;
                namespace
                    .is_none_or(|ns| grant.covers(ns))
                    .then(|| self.consumer_view(account))
            }
        }
    }

    pub(super) fn grant_mut(&mut self, consumer: &str) -> Option<&mut Grant> {
        self.grants.iter_mut().find(|g| g.consumer == consumer)
    }

    /// The caller's grant when the share is AVAILABLE or ACTIVE to it.
    pub(super) fn authorized_grant(&self, account: &str) -> Option<&Grant> {
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

fn ts<S: serde::Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_timestamp(*t))
}
