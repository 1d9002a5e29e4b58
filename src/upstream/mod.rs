//! The Redshift client (aws-sdk-redshift, built from aws-config) as a tower service over every
//! operation, and the classification of every `SdkError` into an AWS-neutral
//! [`UpstreamFault`](crate::errors::UpstreamFault).
//!
//! This is the only module that names AWS SDK types. [`classify`] turns an `SdkError` into a
//! fault kind by variant first, then by the AWS error code, using the code lists in `classify`;
//! the gRPC code of each kind is chosen in `status`, and `fault_table` renders the README's table
//! from both ([`fault_rules`]).
//!
//! - `config`: [`UpstreamConfig`], its defaults and validation.
//! - `client`: the shared Redshift and STS clients ([`build_client`]) and the retry counter.
//! - `service`: [`RedshiftService`], the service at the bottom of every Redshift stack.
//! - `classify`: the AWS error-code lists and the classification of SDK errors.
//! - `accounts`, `sessions`, `source_identity`: the consumer accounts served, the role sessions
//!   into them, and the source identity each session carries.
//! - `operations`: each operation's SDK call ([`Forward`]); `s3`: the audit trail's object store.

mod accounts;
mod classify;
mod client;
mod config;
mod operations;
mod s3;
mod service;
mod sessions;
mod source_identity;

pub use accounts::{
    AccountConfig, Accounts, AccountsError, RequireServedAccount, validate_accounts,
};
pub(crate) use classify::classify;
pub use classify::{FaultRule, classify_service, fault_rules};
pub use client::{Client, StaticCredentials, build_client};
pub use config::{DEFAULT_MIN_REMAINING_DEADLINE_MS, UpstreamConfig};
pub use operations::Forward;
pub use s3::{BadS3Url, S3Location, S3Store, S3Url};
pub use service::RedshiftService;
pub use sessions::RoleTarget;
pub use source_identity::{role_session_name, source_identity};
