//! datashare-gateway: the audited, policy-checked gRPC door to Amazon Redshift's
//! `AssociateDataShareConsumer`.
//!
//! # Layout
//!
//! - [`admin`]: the admin HTTP listener (`/metrics`, `/livez`, `/readyz`).
//! - [`proto`]: generated code for `datasharing.v1` and its descriptor set; nothing else.
//! - [`arn`]: datashare and namespace ARNs, account ids and region names; the only parser of them.
//! - [`call`]: the typed call that the middleware stack passes along.
//! - [`validation`]: turns the decoded request into a validated one, naming each bad field.
//! - [`identity`]: who the caller is (mTLS certificate or, in insecure mode, `x-caller-id`).
//! - [`policy`]: Cedar policies, their schema, hot reload, and the policy layer.
//! - [`audit`]: the durable, hash-chained audit trail, its layers and `audit verify`.
//! - [`limits`]: a bound on concurrent upstream calls.
//! - [`metrics`]: Prometheus metrics and the layer that counts calls.
//! - [`upstream`]: the Redshift client (aws-sdk-redshift) as a tower service, and `SdkError`
//!   classification.
//! - [`errors`]: the gateway's error type and the one mapping to `tonic::Status`.
//! - [`config`]: the TOML configuration, validated at start.
//! - [`server`]: wiring: the middleware stack, the gRPC handler, health, reflection, serving.
//! - [`telemetry`]: logs and signals.
//! - [`cli`]: the command line.
//!
//! The Redshift emulator (the AWS Query protocol, for tests and `dev`) is the separate
//! `datashare-emulator` crate in `emulator/`; only `cli` uses it.

pub mod admin;
pub mod arn;
pub mod audit;
pub mod call;
pub mod cli;
pub mod config;
pub mod errors;
pub mod identity;
pub mod limits;
pub mod metrics;
pub mod policy;
pub mod proto;
pub mod server;
pub mod telemetry;
pub mod upstream;
pub mod validation;
