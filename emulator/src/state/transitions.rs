//! The eight operations' effects on the state: authorize, deauthorize, associate,
//! disassociate and reject change a grant; the three Describe calls read shares from the
//! caller's side.

use time::OffsetDateTime;

use super::model::{Association, DataShareView, Side, Target, TargetParams};
use super::{Store, lock, not_found};
use crate::arn::Region;
use crate::fixtures::GrantStatus;
use crate::protocol::AwsError;

fn not_associated(arn: &str) -> AwsError {
    // Real AWS's message, which the Terraform AWS provider matches on (docs/emulator.md,
    // "Operations and state").
    AwsError::invalid_datashare(format!(
        "The datashare {arn} either doesn't exist or isn't associated with this data consumer."
    ))
}

impl Store {
    /// Exactly one of entire account (true), ConsumerArn, ConsumerRegion. Neither the model nor
    /// the API reference says so; Terraform's provider enforces ExactlyOneOf, and the error
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
        // Only the owning account can authorize; to anyone else the share does not exist.
        if share.producer_account != caller {
            return Err(not_found(arn));
        }
        let now = OffsetDateTime::now_utc();
        let Some(grant) = share.grant_mut(consumer) else {
            // Usage never granted to the consumer → InvalidDataShareFault (the message is an
            // assumption).
            return Err(AwsError::invalid_datashare(format!(
                "The datashare {arn} can't be authorized for {consumer} because usage on it has not been granted to that consumer."
            )));
        };
        // From PENDING_AUTHORIZATION, and again after REJECTED or DEAUTHORIZED. Authorizing an
        // already authorized grant succeeds and only updates ProducerAllowedWrites
        // (assumption).
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
            // Real AWS's message, which the Terraform AWS provider matches on
            // (docs/emulator.md, "Operations and state").
            return Err(AwsError::invalid_datashare(format!(
                "The datashare {arn} can't be deauthorized because you have already removed authorization from the data share."
            )));
        }
        // The consumer loses access immediately, so its associations go.
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
        // Only when AVAILABLE or ACTIVE for the caller's account.
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
            // Not associated → InvalidDataShareFault.
            return Err(not_associated(arn));
        };
        grant.associations.remove(pos);
        // Back to AVAILABLE for the consumer, AUTHORIZED for the producer when nothing is
        // left (inferred: Redshift documents ACTIVE as having at least one association).
        grant.status_changed = OffsetDateTime::now_utc();
        Ok(share.consumer_view(caller))
    }

    /// RejectDataShare (model: "From a datashare consumer account, rejects the specified datashare").
    pub(crate) fn reject(&self, caller: &str, arn: &str) -> Result<DataShareView, AwsError> {
        let share = self.share(arn)?;
        let mut share = lock(&share);
        let now = OffsetDateTime::now_utc();
        // Allowed from AVAILABLE or ACTIVE only.
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
            // The caller's outbound shares, then its inbound ones.
            let view = share
                .seen_from(Side::Producer, caller, None)
                .or_else(|| share.seen_from(Side::Consumer, caller, None));
            match (view, arn) {
                (Some(view), _) => out.push(view),
                (None, Some(arn)) => return Err(not_associated(arn)),
                (None, None) => {}
            }
        }
        Ok(out)
    }

    /// DescribeDataSharesForProducer (model: "Returns a list of datashares when the account
    /// identifier being called is a producer account identifier") and
    /// DescribeDataSharesForConsumer (model: "Returns a list of datashares where the account
    /// identifier being called is a consumer account identifier"). `namespace` is
    /// `ProducerArn` or `ConsumerArn`, and must be one of the caller's namespaces.
    pub(crate) fn describe_for(
        &self,
        side: Side,
        caller: &str,
        namespace: Option<&str>,
        status: Option<&str>,
    ) -> Result<Vec<DataShareView>, AwsError> {
        let namespace = namespace
            .map(|a| self.own_namespace(a, caller))
            .transpose()?;
        let mut out = Vec::new();
        for share in self.all_shares() {
            let Some(view) = lock(&share).seen_from(side, caller, namespace.as_deref()) else {
                continue;
            };
            // "returns the list of datashares that have the specified status" (model): a share
            // matches when any association has it; the whole share is returned (assumption).
            if status.is_none_or(|s| view.associations.iter().any(|a| a.status == s)) {
                out.push(view);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::Fixtures;
    use crate::state::model::{ACTIVE, AUTHORIZED, AVAILABLE, PENDING_AUTHORIZATION, REJECTED};

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
            s.describe_for(Side::Consumer, CONSUMER, None, None)
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
            .describe_for(Side::Producer, PRODUCER, None, Some(PENDING_AUTHORIZATION))
            .unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].arn, FINANCE);
        assert_eq!(
            s.describe_for(Side::Producer, PRODUCER, Some(NS), None)
                .unwrap_err()
                .code,
            "InvalidNamespaceFault"
        );
    }
}
