//! datashare-gateway: the audited, policy-checked gRPC door to Amazon Redshift's
//! datashare-consumer operations (associate, disassociate, list).
//!
//! # Layout
//!
//! - [`accept`]: the gRPC listener's connections: a cap, TLS handshakes with a timeout, the client
//!   certificate read once per connection.
//! - [`admin`]: the admin HTTP listener (`/metrics`, `/livez`, `/readyz`).
//! - [`proto`]: generated code for `datasharing.v1` and its descriptor set; nothing else.
//! - [`codec`]: the services' protobuf codec (an undecodable body is INVALID_ARGUMENT).
//! - [`arn`]: datashare and namespace ARNs, account ids and region names; the only parser of them.
//! - [`call`]: the [`call::Operation`] trait and the typed [`call::Call`] the stack passes along,
//!   stage by stage.
//! - [`operations`]: the one list of the operations the gateway serves, and everything kept per
//!   operation, derived from it.
//! - [`ops`]: the operations (AssociateConsumer, DisassociateConsumer, ListConsumerDataShares):
//!   parameters, validation rules, policy input, proto glue.
//! - [`middleware`]: the tower `Layer` + `Service` skeleton every layer of the stack shares.
//! - [`validation`]: the layer that validates each call with its operation's rules.
//! - [`identity`]: who the caller is (mTLS certificate or, in insecure mode, `x-caller-id`).
//! - [`policy`]: Cedar policies, their schema, hot reload, and the policy layer.
//! - [`audit`]: the durable, hash-chained audit trail, its layers and `audit verify`.
//! - [`approvals`]: two-person approval bound to the exact request: the store (SQLite or
//!   PostgreSQL, through sqlx), the layers that look approvals up and spend them, and the
//!   `datasharing.v1.Approvals` operations.
//! - [`limits`]: fair shares of the call slots per caller, a rate per caller, and no call started with
//!   its deadline spent.
//! - [`drain`]: the calls in flight, waited for at shutdown and recorded when aborted.
//! - [`metrics`]: Prometheus metrics and the layer that counts calls.
//! - [`reconcile`]: the audit trail matched with CloudTrail, and what did not add up.
//! - [`upstream`]: the Redshift client (aws-sdk-redshift) as a tower service, and `SdkError`
//!   classification into AWS-neutral fault kinds; the only module naming AWS SDK types.
//! - [`errors`]: the gateway's error type, in its own terms (no gRPC code).
//! - [`status`]: the one mapping of errors to `tonic::Status`.
//! - [`fault_table`]: the README's fault-to-status table, rendered from `upstream`'s
//!   classification and `status`'s mapping (so neither imports the other).
//! - [`config`]: the TOML configuration, validated at start.
//! - [`bounds`]: the one `{key} = {value}: must be {min} to {max}` check the sections share.
//! - [`server`]: wiring: the middleware stack, the gRPC handler, health, reflection, serving.
//! - [`telemetry`]: logs and signals.
//! - [`cli`]: the command line; the only module with clap types, and the only one that joins the
//!   gateway and the emulator (the `dev` and `emulator` commands).
//!
//! The Redshift emulator (the AWS Query protocol, for tests and `dev`) is the separate
//! `datashare-emulator` crate in `emulator/`; it imports nothing from the gateway and only `cli`
//! uses it (`tests/it/architecture.rs` holds both to that).
//!
//! # Adding an operation
//!
//! 1. `proto/datasharing/v1/datasharing.proto`: the rpc, its request and response, documented
//!    with the errors it returns.
//! 2. `src/ops/<operation>.rs` (and a line in `src/ops/mod.rs`): a type implementing
//!    [`call::Operation`] (method, whether it changes state, parameters, validation, policy
//!    input, `validate_only` answer, and for a state change in AWS `approval_role` returning
//!    `Gated` with the request's semantic fields, a [`call::SemanticRequest`] of named fields
//!    in a fixed order, so that policy can require approvals of it) and [`ops::Rpc`] (proto
//!    glue).
//! 3. `src/upstream/operations.rs`: its [`upstream::Forward`] impl (the SDK call and its output).
//! 4. `src/operations.rs`: one line in `with_operations!`. The handler's stack and tonic method,
//!    the metric labels, the policy probes, the approvals store's methods, `policy check` and
//!    the fuzz targets follow from it; a unit test fails if an rpc of the descriptor set has no
//!    line there, or the reverse.
//! 5. `policy/schema.cedarschema`: its Cedar action, and, for a gated operation, its semantic
//!    fields as attributes of `Approval` (optional ones, `name?: Type`, when other operations
//!    lack them); extend the example policies that should cover it.
//! 6. Tests: validation rules beside the code; end to end in `tests/it/` through the emulator.
//!
//! Identity, validation, policy, limits, audit (write-ahead when it changes state), metrics,
//! spans and the fault mapping apply to it without change, and so do approvals: the store keeps
//! any operation's fields (`approval_fields`), the API shows them (`ApprovedRequest.fields`),
//! the audit record names them and policy reads them as the `Approval`'s attributes.

pub mod accept;
pub mod admin;
pub mod approvals;
pub mod arn;
pub mod audit;
pub mod bounds;
pub mod call;
pub mod cli;
pub mod codec;
pub mod config;
pub mod drain;
pub mod errors;
pub mod fault_table;
pub mod identity;
pub mod limits;
pub mod metrics;
pub mod middleware;
pub mod operations;
pub mod ops;
pub mod policy;
pub mod proto;
pub mod reconcile;
pub mod server;
pub mod status;
pub mod telemetry;
#[cfg(test)]
mod testing;
pub mod upstream;
pub mod validation;
