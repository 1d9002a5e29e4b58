//! Who the caller is: the principal from a verified client certificate (mTLS) or, in insecure
//! mode only, the `x-caller-id` metadata; and the caller's groups from the configuration.
//!
//! The transport decides the [`CallerCredential`] (see [`credential_for`]); [`Authenticate`]
//! turns it into a [`Principal`] with groups from the [`PrincipalDirectory`], or refuses the call.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use tower::Service;
use x509_parser::extensions::GeneralName;

use crate::call::{
    Authenticated, Call, CallFuture, CallerCredential, Operation, Principal, Received,
};
use crate::errors::GatewayError;
use crate::middleware::Middleware;

/// The metadata key that names the caller in insecure mode.
pub const CALLER_ID_HEADER: &str = "x-caller-id";

/// How callers are authenticated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// TLS with client certificates verified against the configured CA bundle; the principal
    /// comes from the certificate. The production default.
    #[default]
    Mtls,
    /// Plaintext; the principal is whatever `x-caller-id` says. For development only.
    Insecure,
}

/// The groups of one principal, as configured under `[principals."<id>"]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalEntry {
    /// The groups policies see in `principal.groups`.
    pub groups: Vec<String>,
}

/// Principal id → its entry. Principals not listed are authenticated but have no groups.
pub type PrincipalDirectory = BTreeMap<String, PrincipalEntry>;

/// Why no principal could be taken from a certificate.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The bytes are not a DER X.509 certificate.
    #[error("the client certificate cannot be parsed")]
    BadCertificate(#[source] x509_parser::nom::Err<x509_parser::error::X509Error>),
    /// The subject alternative name extension is malformed or duplicated.
    #[error("the client certificate's subject alternative names cannot be read")]
    BadSubjectAltName(#[source] x509_parser::error::X509Error),
    /// The certificate has no URI SAN, DNS SAN or subject CN.
    #[error("the client certificate names no principal (no URI SAN, DNS SAN or subject CN)")]
    NoPrincipal,
}

/// The principal a client certificate names: its first URI SAN (a SPIFFE id such as
/// `spiffe://example.internal/ns/data/sa/reporting`), else its first DNS SAN, else its subject
/// CN. The certificate must already have been verified by the TLS stack.
pub fn principal_from_certificate(der: &[u8]) -> Result<String, IdentityError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(IdentityError::BadCertificate)?;
    let sans = cert
        .subject_alternative_name()
        .map_err(IdentityError::BadSubjectAltName)?
        .map(|ext| ext.value.general_names.clone())
        .unwrap_or_default();
    let uri = sans.iter().find_map(|n| match n {
        GeneralName::URI(u) if !u.is_empty() => Some(*u),
        _ => None,
    });
    let dns = || {
        sans.iter().find_map(|n| match n {
            GeneralName::DNSName(d) if !d.is_empty() => Some(*d),
            _ => None,
        })
    };
    let cn = || {
        cert.subject()
            .iter_common_name()
            .find_map(|cn| cn.as_str().ok())
            .filter(|cn| !cn.is_empty())
    };
    uri.or_else(dns)
        .or_else(cn)
        .map(str::to_owned)
        .ok_or(IdentityError::NoPrincipal)
}

/// What the transport establishes about a caller, for the gRPC handler: in mTLS mode the
/// principal of the verified leaf certificate (the `x-caller-id` header is ignored); in insecure
/// mode the `x-caller-id` value when it is set and not empty. Anything else is
/// [`CallerCredential::None`], which [`Authenticate`] refuses.
pub fn credential_for(
    mode: AuthMode,
    leaf_certificate_der: Option<&[u8]>,
    caller_id_header: Option<&str>,
) -> Result<CallerCredential, IdentityError> {
    match mode {
        AuthMode::Mtls => match leaf_certificate_der {
            Some(der) => principal_from_certificate(der).map(CallerCredential::Certificate),
            None => Ok(CallerCredential::None),
        },
        AuthMode::Insecure => Ok(match caller_id_header.map(str::trim) {
            Some(id) if !id.is_empty() => CallerCredential::Header(id.to_owned()),
            _ => CallerCredential::None,
        }),
    }
}

/// Establishes the caller's principal and groups; calls without an identity end here with
/// `Unauthenticated`.
#[derive(Clone, Debug)]
pub struct Authenticate {
    directory: Arc<PrincipalDirectory>,
}

impl Authenticate {
    /// Looks groups up in `directory`.
    pub fn new(directory: Arc<PrincipalDirectory>) -> Self {
        Authenticate { directory }
    }

    fn principal(&self, credential: &CallerCredential) -> Result<Principal, GatewayError> {
        let id = match credential {
            CallerCredential::Certificate(id) | CallerCredential::Header(id) if !id.is_empty() => {
                id
            }
            CallerCredential::Certificate(_) => {
                return Err(GatewayError::Unauthenticated(
                    "no caller identity: the client certificate names no principal".into(),
                ));
            }
            CallerCredential::Header(_) | CallerCredential::None => {
                return Err(GatewayError::Unauthenticated(
                    "no caller identity: present a client certificate (mTLS) or, in insecure mode, x-caller-id".into(),
                ));
            }
        };
        let groups = self
            .directory
            .get(id)
            .map(|e| e.groups.clone())
            .unwrap_or_default();
        Ok(Principal {
            id: id.clone(),
            groups,
        })
    }
}

impl<Op: Operation> Middleware<Op, Received> for Authenticate {
    type Out = Authenticated;

    fn handle<S, F>(&self, call: Call<Op, Received>, mut next: S) -> CallFuture<Op::Reply>
    where
        S: Service<Call<Op, Self::Out>, Response = Op::Reply, Error = GatewayError, Future = F>
            + Send
            + 'static,
        F: std::future::Future<Output = Result<Op::Reply, GatewayError>> + Send + 'static,
    {
        match self.principal(&call.ctx.credential) {
            Ok(principal) => {
                call.notes.lock().principal = Some(principal.clone());
                Box::pin(next.call(call.advance(Authenticated { principal })))
            }
            Err(err) => Box::pin(async move { Err(err) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::middleware::MiddlewareLayer;
    use crate::testing::{Counting, associate_call};
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};
    use tower::Layer;

    fn call_with(credential: CallerCredential) -> Call<crate::ops::AssociateConsumer> {
        associate_call(credential, Default::default())
    }

    fn cert(uris: &[&str], dns: &[&str], cn: Option<&str>) -> Vec<u8> {
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        for d in dns {
            params
                .subject_alt_names
                .push(SanType::DnsName((*d).try_into().unwrap()));
        }
        for u in uris {
            params
                .subject_alt_names
                .push(SanType::URI((*u).try_into().unwrap()));
        }
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    const SPIFFE: &str = "spiffe://example.internal/ns/data/sa/reporting";

    #[test]
    fn uri_san_wins_over_dns_san_and_cn() {
        let der = cert(&[SPIFFE], &["reporting.data.svc"], Some("reporting"));
        assert_eq!(principal_from_certificate(&der).unwrap(), SPIFFE);
    }

    #[test]
    fn dns_san_wins_over_cn_when_there_is_no_uri_san() {
        let der = cert(
            &[],
            &["reporting.data.svc", "second.data.svc"],
            Some("reporting"),
        );
        assert_eq!(
            principal_from_certificate(&der).unwrap(),
            "reporting.data.svc"
        );
    }

    #[test]
    fn cn_is_used_when_there_are_no_sans() {
        let der = cert(&[], &[], Some("reporting"));
        assert_eq!(principal_from_certificate(&der).unwrap(), "reporting");
    }

    #[test]
    fn a_certificate_naming_nobody_is_an_error() {
        let der = cert(&[], &[], None);
        assert!(matches!(
            principal_from_certificate(&der),
            Err(IdentityError::NoPrincipal)
        ));
        assert!(matches!(
            principal_from_certificate(b"not a certificate"),
            Err(IdentityError::BadCertificate(_))
        ));
    }

    #[test]
    fn mtls_ignores_the_header_and_insecure_needs_it() {
        let der = cert(&[SPIFFE], &[], None);
        assert!(matches!(
            credential_for(AuthMode::Mtls, Some(&der), Some("someone-else")).unwrap(),
            CallerCredential::Certificate(id) if id == SPIFFE
        ));
        assert!(matches!(
            credential_for(AuthMode::Mtls, None, Some("someone-else")).unwrap(),
            CallerCredential::None
        ));
        assert!(matches!(
            credential_for(AuthMode::Insecure, None, Some("dev")).unwrap(),
            CallerCredential::Header(id) if id == "dev"
        ));
        assert!(matches!(
            credential_for(AuthMode::Insecure, None, Some("  ")).unwrap(),
            CallerCredential::None
        ));
        assert!(matches!(
            credential_for(AuthMode::Insecure, None, None).unwrap(),
            CallerCredential::None
        ));
    }

    #[test]
    fn auth_mode_and_principals_deserialize_from_config() {
        #[derive(Deserialize)]
        struct Cfg {
            mode: AuthMode,
            principals: PrincipalDirectory,
        }
        let cfg: Cfg = toml::from_str(
            "mode = \"insecure\"\n[principals.\"spiffe://x/a\"]\ngroups = [\"data-platform\"]\n",
        )
        .unwrap();
        assert_eq!(cfg.mode, AuthMode::Insecure);
        assert_eq!(cfg.principals["spiffe://x/a"].groups, ["data-platform"]);
        let bad =
            toml::from_str::<Cfg>("mode = \"mtls\"\n[principals.a]\ngroups = []\nrole = \"x\"\n");
        assert!(
            bad.is_err(),
            "unknown keys in a principal entry are rejected"
        );
    }

    fn directory() -> Arc<PrincipalDirectory> {
        Arc::new(PrincipalDirectory::from([(
            SPIFFE.to_owned(),
            PrincipalEntry {
                groups: vec!["data-platform".into()],
            },
        )]))
    }

    #[tokio::test]
    async fn no_credential_is_unauthenticated_and_not_forwarded() {
        let inner = Counting::<Authenticated>::default();
        let mut svc = MiddlewareLayer::new(Authenticate::new(directory())).layer(inner.clone());
        for credential in [
            CallerCredential::None,
            CallerCredential::Header(String::new()),
            CallerCredential::Certificate(String::new()),
        ] {
            let err = svc.call(call_with(credential)).await.unwrap_err();
            assert!(matches!(err, GatewayError::Unauthenticated(_)));
            assert!(err.to_string().starts_with("no caller identity"));
        }
        assert_eq!(inner.count(), 0);
    }

    fn seen(inner: &Counting<Authenticated>) -> Option<Principal> {
        inner
            .last_stage
            .lock()
            .unwrap()
            .clone()
            .map(|stage| stage.principal)
    }

    #[tokio::test]
    async fn groups_are_looked_up_and_recorded_in_the_trail() {
        let inner = Counting::<Authenticated>::default();
        let mut svc = MiddlewareLayer::new(Authenticate::new(directory())).layer(inner.clone());
        let call = call_with(CallerCredential::Certificate(SPIFFE.into()));
        let notes = call.notes.clone();
        svc.call(call).await.unwrap();
        let expected = Principal {
            id: SPIFFE.into(),
            groups: vec!["data-platform".into()],
        };
        assert_eq!(seen(&inner), Some(expected.clone()));
        assert_eq!(notes.snapshot().principal, Some(expected));

        // Unknown principals are authenticated, with no groups.
        let call = call_with(CallerCredential::Header("stranger".into()));
        svc.call(call).await.unwrap();
        assert_eq!(
            seen(&inner),
            Some(Principal {
                id: "stranger".into(),
                groups: vec![]
            })
        );
        assert_eq!(inner.count(), 2);
    }
}
