//! The one list of the operations the gateway serves ([`with_operations!`]), and what is derived
//! from it: the handler's stacks and tonic methods (`server`), the method names that label
//! metrics, the Redshift operation names that label retries, the policy probes the loader checks
//! the schema with, the methods the approvals store knows, and the `policy check` dispatch and
//! fuzz targets. A test walks the compiled descriptor set against it.
//!
//! It sits above `ops`, `approvals` and `upstream` (it names their operations), so the modules
//! below it are handed what they need of it (the probes, the method and operation names) by the
//! wiring rather than reaching up for it.

use crate::call::{ApprovalFacts, ApprovalRole, Operation, PolicyInput};
use crate::ops::Rpc;
use crate::upstream::Forward;

/// Calls `$then!` with every operation, by gRPC service: the operations Redshift carries out
/// (`redshift`) and those the approvals store carries out (`approvals`), each as its type and its
/// tonic method name. Adding an operation adds a line here.
macro_rules! with_operations {
    ($then:ident) => {
        $then! {
            redshift: [
                $crate::ops::AssociateConsumer => associate_consumer,
                $crate::ops::DisassociateConsumer => disassociate_consumer,
                $crate::ops::ListConsumerDataShares => list_consumer_data_shares,
            ]
            approvals: [
                $crate::approvals::ops::GetApproval => get_approval,
                $crate::approvals::ops::ListApprovals => list_approvals,
                $crate::approvals::ops::Approve => approve,
                $crate::approvals::ops::Deny => deny,
            ]
        }
    };
}
pub(crate) use with_operations;

/// Something done once for each operation ([`for_each`]).
pub trait EachOperation {
    /// Does it for `Op`.
    fn operation<Op: Rpc>(&mut self);
}

/// Something done once for each operation Redshift carries out ([`for_each_redshift`]).
pub trait EachRedshiftOperation {
    /// Does it for `Op`.
    fn operation<Op>(&mut self)
    where
        Op: Rpc + Forward,
        Op::Params: serde::de::DeserializeOwned;
}

macro_rules! visitors {
    (
        redshift: [$($redshift:path => $redshift_method:ident),* $(,)?]
        approvals: [$($approvals:path => $approvals_method:ident),* $(,)?]
    ) => {
        /// Calls `each` once for every operation, in the order of [`with_operations!`].
        pub fn for_each(each: &mut impl EachOperation) {
            $(each.operation::<$redshift>();)*
            $(each.operation::<$approvals>();)*
        }

        /// Calls `each` once for every operation Redshift carries out.
        pub fn for_each_redshift(each: &mut impl EachRedshiftOperation) {
            $(each.operation::<$redshift>();)*
        }
    };
}
with_operations!(visitors);

/// Every operation's gRPC service and method (`datasharing.v1.DataSharing`, `AssociateConsumer`),
/// listed once per process: the HTTP front looks a method up on every request.
pub fn methods() -> &'static [(&'static str, &'static str)] {
    struct Collect(Vec<(&'static str, &'static str)>);
    impl EachOperation for Collect {
        fn operation<Op: Rpc>(&mut self) {
            self.0.push((Op::SERVICE, Op::METHOD));
        }
    }
    static METHODS: std::sync::LazyLock<Vec<(&'static str, &'static str)>> =
        std::sync::LazyLock::new(|| {
            let mut collect = Collect(Vec::new());
            for_each(&mut collect);
            collect.0
        });
    &METHODS
}

/// The method named `name`, as the `&'static str` metric labels take; `None` for any other name.
pub fn method_named(name: &str) -> Option<&'static str> {
    methods()
        .iter()
        .map(|(_, method)| *method)
        .find(|method| *method == name)
}

/// The Redshift operations the gateway calls (`AssociateDataShareConsumer`, ...): the only
/// values of the retry metric's `operation` label.
pub fn redshift_operations() -> Vec<&'static str> {
    struct Collect(Vec<&'static str>);
    impl EachRedshiftOperation for Collect {
        fn operation<Op>(&mut self)
        where
            Op: Rpc + Forward,
            Op::Params: serde::de::DeserializeOwned,
        {
            self.0.push(Op::AWS_OPERATION);
        }
    }
    let mut collect = Collect(Vec::new());
    for_each_redshift(&mut collect);
    collect.0
}

/// The Redshift operation the gateway method `method` is forwarded as (`AssociateConsumer`:
/// `AssociateDataShareConsumer`); `None` for methods Redshift does not carry out.
pub fn redshift_operation_of(method: &str) -> Option<&'static str> {
    struct Find<'a>(&'a str, Option<&'static str>);
    impl EachRedshiftOperation for Find<'_> {
        fn operation<Op>(&mut self)
        where
            Op: Rpc + Forward,
            Op::Params: serde::de::DeserializeOwned,
        {
            if Op::METHOD == self.0 {
                self.1 = Some(Op::AWS_OPERATION);
            }
        }
    }
    let mut find = Find(method, None);
    for_each_redshift(&mut find);
    find.1
}

/// Whether policy can require approvals of `Op`'s requests (its sample request is gated).
fn is_gated<Op: Operation>() -> bool {
    matches!(
        Op::approval_role(&Op::sample_request()),
        ApprovalRole::Gated { .. }
    )
}

/// The methods whose requests approvals can be bound to: what the approvals store accepts in
/// its `method` column.
pub fn approvable_methods() -> Vec<&'static str> {
    struct Collect(Vec<&'static str>);
    impl EachOperation for Collect {
        fn operation<Op: Rpc>(&mut self) {
            if is_gated::<Op>() {
                self.0.push(Op::METHOD);
            }
        }
    }
    let mut collect = Collect(Vec::new());
    for_each(&mut collect);
    collect.0
}

/// The policy inputs of a sample request of every operation (and, for one that approvals can
/// gate, of the same request with an approval, so the schema must describe
/// `context.approvals`): the policy loader checks that the schema describes each of them, so a
/// schema that does not is refused at load rather than denying every call at run time.
pub fn policy_probes() -> Vec<PolicyInput> {
    struct Collect(Vec<PolicyInput>);
    impl EachOperation for Collect {
        fn operation<Op: Rpc>(&mut self) {
            let sample = Op::sample_request();
            self.0
                .push(Op::policy_input(&sample, &ApprovalFacts::default()));
            if is_gated::<Op>() {
                self.0
                    .push(Op::policy_input(&sample, &ApprovalFacts::with_approvals(1)));
            }
        }
    }
    let mut collect = Collect(Vec::new());
    for_each(&mut collect);
    collect.0
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use prost::Message;

    use super::*;

    #[test]
    fn every_rpc_in_the_descriptor_set_is_a_registered_operation_and_the_reverse() {
        let set = prost_types::FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET)
            .expect("the compiled descriptor set decodes");
        let rpcs: BTreeSet<(String, String)> = set
            .file
            .iter()
            .flat_map(|file| {
                let package = file.package().to_owned();
                file.service.iter().flat_map(move |service| {
                    let service_name = format!("{package}.{}", service.name());
                    service
                        .method
                        .iter()
                        .map(move |method| (service_name.clone(), method.name().to_owned()))
                })
            })
            .collect();
        assert!(!rpcs.is_empty(), "the descriptor set names no rpc");
        let registered: BTreeSet<(String, String)> = methods()
            .iter()
            .map(|(service, method)| ((*service).to_owned(), (*method).to_owned()))
            .collect();
        let unregistered: Vec<_> = rpcs.difference(&registered).collect();
        assert!(
            unregistered.is_empty(),
            "rpcs without an operation: {unregistered:?}"
        );
        let not_rpcs: Vec<_> = registered.difference(&rpcs).collect();
        assert!(
            not_rpcs.is_empty(),
            "operations without an rpc: {not_rpcs:?}"
        );
    }

    #[test]
    fn the_derived_lists_are_what_the_operations_say() {
        assert_eq!(
            approvable_methods(),
            ["AssociateConsumer", "DisassociateConsumer"]
        );
        assert_eq!(
            redshift_operations(),
            [
                "AssociateDataShareConsumer",
                "DisassociateDataShareConsumer",
                "DescribeDataSharesForConsumer"
            ]
        );
        assert_eq!(method_named("Approve"), Some("Approve"));
        assert_eq!(method_named("Nope"), None);
        // Every operation once, and the gated ones once more with an approval.
        assert_eq!(
            policy_probes().len(),
            methods().len() + approvable_methods().len()
        );
    }
}
