//! Wiring: the middleware stack, the gRPC handler, health, reflection, and serving.
//!
//! - `stack`: [`StackParts`] and [`build_stack`], the one place an operation's layers are put in
//!   order.
//! - `handler`: [`Gateway`], the tonic services, turning each request into a typed call for its
//!   stack and its outcome into the answer.
//! - `http`: the HTTP front under tonic's router (arrival stamp, non-gRPC refusals, undecodable
//!   bodies counted).
//! - `app`: [`App`], built from the configuration, serving until shut down, then draining.

mod app;
mod handler;
mod http;
mod stack;

pub use app::{App, BuildOptions, ready_line};
pub use handler::Gateway;
pub use stack::{StackParts, build_stack};

use std::net::SocketAddr;

use tower::util::BoxCloneSyncService;

use crate::call::{Call, Operation};
use crate::errors::GatewayError;

/// The full middleware stack of one operation, over its typed call.
pub type CallService<Op> = BoxCloneSyncService<Call<Op>, <Op as Operation>::Reply, GatewayError>;

/// The metadata key of the request id, read from callers and echoed back.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// The response metadata key carrying the call's trace id.
pub const TRACE_ID_HEADER: &str = "x-trace-id";
/// The name health checks use for the gateway's service.
pub const SERVICE_NAME: &str = "datasharing.v1.DataSharing";
/// The name health checks use for the approvals service.
pub const APPROVALS_SERVICE_NAME: &str = crate::approvals::ops::SERVICE;

/// Why the gateway could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A TLS file could not be read.
    #[error("cannot read {key} file {path}")]
    TlsFile {
        /// The config key.
        key: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// tonic refused the TLS settings or failed while serving.
    #[error("gRPC transport error")]
    Transport(#[from] tonic::transport::Error),
    /// The audit trail could not be opened.
    #[error("cannot open the audit notes")]
    Audit(#[from] crate::audit::AuditError),
    /// The policies could not be loaded.
    #[error("cannot load the policies")]
    Policy(#[from] crate::policy::PolicyError),
    /// The approvals store could not be opened.
    #[error(transparent)]
    Approvals(#[from] crate::approvals::OpenError),
    /// A configuration value is unusable.
    #[error("{0}")]
    Config(String),
    /// S3 says the audit bucket is missing, or lacks Object Lock or versioning.
    #[error(transparent)]
    Bucket(#[from] crate::audit::UnprotectedBucket),
    /// The TLS files do not make a usable TLS configuration.
    #[error("cannot use the TLS configuration")]
    Tls(#[source] crate::accept::TlsSetupError),
    /// Reflection could not be built from the descriptor set.
    #[error("cannot build the reflection service")]
    Reflection(#[from] tonic_reflection::server::Error),
}
