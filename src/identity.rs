//! identity (stub until the identity module lands).

use std::collections::BTreeMap;

/// How callers are identified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Client certificates.
    Mtls,
    /// `x-caller-id`.
    Insecure,
}

/// Principal id → entry.
pub type PrincipalDirectory = BTreeMap<String, PrincipalEntry>;

/// A principal's entry.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalEntry {
    /// Groups.
    pub groups: Vec<String>,
}

/// Stub.
pub fn principal_from_certificate(_der: &[u8]) -> Result<String, String> {
    Err("not implemented".into())
}
