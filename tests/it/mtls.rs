//! Caller identity through the real gateway process: in mtls mode the principal comes from the
//! verified client certificate (URI SAN, else DNS SAN, else CN) and nothing else; certificates the
//! gateway cannot trust for client authentication never reach the service. In insecure mode a
//! call without `x-caller-id` is refused.

use crate::support;

use std::path::PathBuf;
use std::time::Duration;

use datashare_gateway::proto::datasharing::v1::AssociateConsumerRequest;
use datashare_gateway::proto::datasharing::v1::data_sharing_client::DataSharingClient;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use support::emulator::Emulator;
use support::gateway::{
    self, Auth, FRONTEND, Gateway, GatewayOptions, LOADER, REPORTING, SALES_SHARE,
};
use tempfile::TempDir;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic_types::StatusExt;

const OP: &str = "AssociateDataShareConsumer";

/// A CA and its PEM certificate.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA certificate"),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf certificate and its key, both PEM.
    fn issue(&self, leaf: Leaf) -> (String, String) {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        if let Some(cn) = leaf.cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params.subject_alt_names = leaf.sans;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = leaf.usages;
        if leaf.expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        (cert.pem(), key.serialize_pem())
    }
}

/// What a leaf certificate says.
struct Leaf {
    sans: Vec<SanType>,
    cn: Option<&'static str>,
    usages: Vec<ExtendedKeyUsagePurpose>,
    expired: bool,
}

impl Leaf {
    fn client(sans: Vec<SanType>, cn: Option<&'static str>) -> Leaf {
        Leaf {
            sans,
            cn,
            usages: vec![ExtendedKeyUsagePurpose::ClientAuth],
            expired: false,
        }
    }
}

fn uri(id: &str) -> SanType {
    SanType::URI(id.try_into().expect("URI SAN"))
}

fn dns(name: &str) -> SanType {
    SanType::DnsName(name.try_into().expect("DNS SAN"))
}

/// The trusted CA, the gateway's server certificate and key on disk.
struct Pki {
    ca: Ca,
    dir: TempDir,
}

impl Pki {
    fn new() -> Pki {
        let ca = Ca::new("datashare-gateway test CA");
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = Leaf::client(
            vec![dns("localhost"), SanType::IpAddress([127, 0, 0, 1].into())],
            Some("localhost"),
        );
        server.usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let (cert, key) = ca.issue(server);
        std::fs::write(dir.path().join("server.pem"), cert).expect("write server cert");
        std::fs::write(dir.path().join("server.key"), key).expect("write server key");
        std::fs::write(dir.path().join("client-ca.pem"), ca.pem()).expect("write CA");
        Pki { ca, dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn auth(&self) -> Auth {
        Auth::Mtls {
            cert: self.path("server.pem"),
            key: self.path("server.key"),
            client_ca: self.path("client-ca.pem"),
        }
    }

    /// A client for `gw` that trusts the CA and presents `identity` (PEM cert and key), if any.
    /// The channel connects on first use, so a refused handshake shows up as the call's error.
    fn client(
        &self,
        gw: &Gateway,
        identity: Option<(String, String)>,
    ) -> DataSharingClient<Channel> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.ca.pem()))
            .domain_name("localhost");
        if let Some((cert, key)) = identity {
            tls = tls.identity(Identity::from_pem(cert, key));
        }
        let channel = Channel::from_shared(format!("https://127.0.0.1:{}", gw.addr.port()))
            .expect("endpoint")
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(10))
            .tls_config(tls)
            .expect("client TLS config")
            .connect_lazy();
        DataSharingClient::new(channel)
    }
}

async fn start(pki: &Pki, emulator: &Emulator) -> Gateway {
    let mut options = GatewayOptions::new(emulator.endpoint_url());
    options.auth = pki.auth();
    Gateway::start(options).await
}

fn entire_account(validate_only: bool) -> AssociateConsumerRequest {
    AssociateConsumerRequest {
        data_share_arn: SALES_SHARE.into(),
        associate_entire_account: true,
        validate_only,
        ..Default::default()
    }
}

fn with_request_id(
    message: AssociateConsumerRequest,
    request_id: &str,
) -> tonic::Request<AssociateConsumerRequest> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-request-id", request_id.parse().expect("ascii id"));
    request
}

/// The principal of the closing record of the call with `request_id`.
fn audited_principal(gw: &Gateway, request_id: &str) -> Option<String> {
    gateway::audit_records(&gw.audit_dir)
        .into_iter()
        .find(|r| r["request_id"] == request_id && (r["kind"] == "call" || r["kind"] == "outcome"))
        .map(|r| r["principal"].as_str().unwrap_or_default().to_owned())
}

/// Asserts that a call was refused before the service saw it: an error, none of the gateway's
/// own answer (no request id, no ErrorInfo), no audit record, and nothing sent to Redshift.
async fn assert_refused_at_transport(
    client: &mut DataSharingClient<Channel>,
    gw: &Gateway,
    emulator: &Emulator,
    what: &str,
) {
    let status = client
        .associate_consumer(with_request_id(entire_account(false), "refused-call"))
        .await
        .expect_err(what);
    assert_ne!(status.code(), Code::Ok, "{what}");
    assert!(
        status.metadata().get("x-request-id").is_none(),
        "{what}: the service answered: {status:?}"
    );
    assert!(
        status.get_error_details().error_info().is_none(),
        "{what}: the service answered: {status:?}"
    );
    assert!(
        !gateway::audit_records(&gw.audit_dir)
            .iter()
            .any(|r| r["request_id"] == "refused-call"),
        "{what}: the call was audited, so it reached the service"
    );
    assert_eq!(emulator.counter(OP, "received"), 0, "{what}");
}

/// The same gateway serves a valid client certificate, so a refusal is about the certificate.
async fn assert_a_valid_certificate_is_served(pki: &Pki, gw: &Gateway) {
    let mut client = pki.client(
        gw,
        Some(pki.ca.issue(Leaf::client(vec![uri(REPORTING)], None))),
    );
    let reply = client
        .associate_consumer(entire_account(true))
        .await
        .expect("a valid client certificate is served");
    assert!(reply.into_inner().validation.is_some());
}

#[tokio::test]
async fn a_valid_client_certificate_calls_as_its_uri_san_principal() {
    let pki = Pki::new();
    let emulator = Emulator::start();
    let gw = start(&pki, &emulator).await;
    let mut client = pki.client(
        &gw,
        Some(pki.ca.issue(Leaf::client(vec![uri(REPORTING)], None))),
    );

    // REPORTING is in data-platform, which alone may associate an entire account.
    let reply = client
        .associate_consumer(with_request_id(entire_account(false), "reporting-1"))
        .await
        .expect("data-platform may associate the entire account")
        .into_inner();
    assert_eq!(reply.data_share_arn, SALES_SHARE);
    assert_eq!(emulator.counter(OP, "received"), 1);
    assert_eq!(
        audited_principal(&gw, "reporting-1").as_deref(),
        Some(REPORTING)
    );
}

#[tokio::test]
async fn the_principal_is_the_uri_san_else_the_dns_san_else_the_cn() {
    let pki = Pki::new();
    let emulator = Emulator::start();
    let gw = start(&pki, &emulator).await;
    let cases = [
        (
            "all-three",
            Leaf::client(
                vec![dns("reporting.data.svc"), uri(REPORTING)],
                Some("reporting-cn"),
            ),
            REPORTING,
        ),
        (
            "dns-and-cn",
            Leaf::client(vec![dns("reporting.data.svc")], Some("reporting-cn")),
            "reporting.data.svc",
        ),
        (
            "cn-only",
            Leaf::client(vec![], Some("reporting-cn")),
            "reporting-cn",
        ),
    ];
    for (request_id, leaf, principal) in cases {
        let mut client = pki.client(&gw, Some(pki.ca.issue(leaf)));
        // Only the URI SAN is a configured principal (data-platform); the others have no groups.
        let result = client
            .associate_consumer(with_request_id(entire_account(true), request_id))
            .await;
        match result {
            Ok(_) => assert_eq!(principal, REPORTING, "{request_id}"),
            Err(status) => assert_eq!(
                (status.code(), principal == REPORTING),
                (Code::PermissionDenied, false),
                "{request_id}: {status:?}"
            ),
        }
        assert_eq!(
            audited_principal(&gw, request_id).as_deref(),
            Some(principal),
            "{request_id}"
        );
    }
    assert_eq!(emulator.counter(OP, "received"), 0, "validate_only only");
}

#[tokio::test]
async fn a_client_certificate_from_an_untrusted_ca_is_refused() {
    let pki = Pki::new();
    let emulator = Emulator::start();
    let gw = start(&pki, &emulator).await;
    let rogue = Ca::new("rogue CA");
    let mut client = pki.client(
        &gw,
        Some(rogue.issue(Leaf::client(vec![uri(REPORTING)], None))),
    );
    assert_refused_at_transport(&mut client, &gw, &emulator, "untrusted CA").await;
    assert_a_valid_certificate_is_served(&pki, &gw).await;
}

#[tokio::test]
async fn a_call_without_a_client_certificate_is_refused() {
    let pki = Pki::new();
    let emulator = Emulator::start();
    let gw = start(&pki, &emulator).await;
    let mut client = pki.client(&gw, None);
    assert_refused_at_transport(&mut client, &gw, &emulator, "no client certificate").await;
    assert_a_valid_certificate_is_served(&pki, &gw).await;
}

#[tokio::test]
async fn an_expired_client_certificate_is_refused() {
    let pki = Pki::new();
    let emulator = Emulator::start();
    let gw = start(&pki, &emulator).await;
    let mut leaf = Leaf::client(vec![uri(REPORTING)], None);
    leaf.expired = true;
    let mut client = pki.client(&gw, Some(pki.ca.issue(leaf)));
    assert_refused_at_transport(&mut client, &gw, &emulator, "expired certificate").await;
    assert_a_valid_certificate_is_served(&pki, &gw).await;
}

#[tokio::test]
async fn a_certificate_without_client_auth_usage_is_refused() {
    let pki = Pki::new();
    let emulator = Emulator::start();
    let gw = start(&pki, &emulator).await;
    let mut leaf = Leaf::client(vec![uri(REPORTING)], None);
    leaf.usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let mut client = pki.client(&gw, Some(pki.ca.issue(leaf)));
    assert_refused_at_transport(&mut client, &gw, &emulator, "serverAuth-only certificate").await;
    assert_a_valid_certificate_is_served(&pki, &gw).await;
}

#[tokio::test]
async fn a_trusted_certificate_naming_no_principal_is_unauthenticated() {
    let pki = Pki::new();
    let emulator = Emulator::start();
    let gw = start(&pki, &emulator).await;
    let mut client = pki.client(&gw, Some(pki.ca.issue(Leaf::client(vec![], None))));
    let mut request = with_request_id(entire_account(false), "nobody");
    request
        .metadata_mut()
        .insert("x-caller-id", REPORTING.parse().expect("ascii"));
    let status = client
        .associate_consumer(request)
        .await
        .expect_err("no URI SAN, DNS SAN or CN");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    // The caller did present a certificate: the message says what is wrong with it.
    assert!(
        status
            .message()
            .contains("the client certificate names no principal"),
        "{status:?}"
    );
    assert!(
        !status.message().contains("present a client certificate"),
        "{status:?}"
    );
    assert_eq!(
        status
            .get_error_details()
            .error_info()
            .map(|i| i.reason.as_str()),
        Some("UNAUTHENTICATED")
    );
    assert_eq!(emulator.counter(OP, "received"), 0);
}

#[tokio::test]
async fn x_caller_id_cannot_override_the_certificate_principal() {
    let pki = Pki::new();
    let emulator = Emulator::start();
    let gw = start(&pki, &emulator).await;
    let mut client = pki.client(
        &gw,
        Some(pki.ca.issue(Leaf::client(vec![uri(FRONTEND)], None))),
    );

    for (request_id, validate_only) in [("spoof-validate", true), ("spoof-call", false)] {
        let mut request = with_request_id(entire_account(validate_only), request_id);
        request
            .metadata_mut()
            .insert("x-caller-id", LOADER.parse().expect("ascii"));
        let status = client
            .associate_consumer(request)
            .await
            .expect_err("FRONTEND may do nothing, whatever x-caller-id says");
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert_eq!(
            status
                .get_error_details()
                .error_info()
                .map(|i| i.reason.as_str()),
            Some("POLICY_DENIED")
        );
        assert_eq!(
            audited_principal(&gw, request_id).as_deref(),
            Some(FRONTEND),
            "the audit trail names the certificate's principal"
        );
    }
    assert_eq!(emulator.counter(OP, "received"), 0);
}

#[tokio::test]
async fn insecure_mode_without_x_caller_id_is_unauthenticated() {
    let emulator = Emulator::start();
    let gw = Gateway::start(GatewayOptions::new(emulator.endpoint_url())).await;
    let mut client = gw.client().await;

    let status = client
        .associate_consumer(entire_account(false))
        .await
        .expect_err("no caller");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(
        status
            .get_error_details()
            .error_info()
            .map(|i| i.reason.as_str()),
        Some("UNAUTHENTICATED")
    );
    // The same call naming a caller is served: the refusal was about the missing identity.
    client
        .associate_consumer(gateway::as_caller(REPORTING, entire_account(true)))
        .await
        .expect("with x-caller-id");
    assert_eq!(emulator.counter(OP, "received"), 0);
}

/// Reads until the server closes the connection or `within` passes; true when it closed.
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn silent_and_garbage_handshakes_are_cut_counted_and_leave_room_for_others() {
    let pki = Pki::new();
    let emulator = Emulator::start();
    let mut options = GatewayOptions::new(emulator.endpoint_url());
    options.auth = pki.auth();
    options.server_toml = "handshake_timeout_ms = 300\nmax_connections = 4".into();
    let gw = Gateway::start(options).await;

    // Four sockets that never speak fill every slot: a fifth is closed on accept.
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(
            tokio::net::TcpStream::connect(gw.addr)
                .await
                .expect("connect"),
        );
    }
    // No wait for them to be accepted: the listener accepts in the order the connections were
    // made, and takes a slot in its accept loop, so the fifth finds every slot taken.
    let mut fifth = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    assert!(
        closed_within(&mut fifth, Duration::from_millis(250)).await,
        "over server.max_connections: closed at once"
    );
    // The silent ones are cut at the handshake timeout, which frees their slots.
    for socket in &mut silent {
        assert!(
            closed_within(socket, Duration::from_secs(3)).await,
            "a handshake that never finishes is cut"
        );
    }
    // Garbage instead of a ClientHello.
    let mut garbage = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    tokio::io::AsyncWriteExt::write_all(&mut garbage, b"GET / HTTP/1.1\r\n\r\n")
        .await
        .expect("write");
    assert!(closed_within(&mut garbage, Duration::from_secs(3)).await);

    // A real client is served again.
    assert_a_valid_certificate_is_served(&pki, &gw).await;
    let metrics = support::prometheus::scrape(gw.admin).await;
    assert_eq!(
        metrics.value(
            "datashare_gateway_connections_refused_total",
            &[("reason", "over_capacity")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metrics.value(
            "datashare_gateway_tls_handshake_failures_total",
            &[("reason", "timeout")]
        ),
        Some(4.0)
    );
    assert!(
        metrics
            .value(
                "datashare_gateway_tls_handshake_failures_total",
                &[("reason", "failed")]
            )
            .is_some_and(|n| n >= 1.0)
    );
}

/// A TLS connection to `gw` that finishes its handshake with a valid client certificate (one
/// naming no groups) and then says nothing.
async fn silent_after_tls(
    pki: &Pki,
    gw: &Gateway,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
    use tokio_rustls::rustls;
    let (cert, key) = pki.ca.issue(Leaf::client(
        vec![uri("spiffe://example.internal/ns/x/sa/mute")],
        None,
    ));
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca.pem().as_bytes()).expect("CA"))
        .expect("root");
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(
            vec![CertificateDer::from_pem_slice(cert.as_bytes()).expect("cert")],
            PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key"),
        )
        .expect("client auth");
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("TLS handshake")
}

#[tokio::test]
async fn connections_silent_after_the_tls_handshake_are_cut_and_a_real_call_gets_through() {
    use tokio::io::AsyncReadExt;
    const SLOTS: usize = 50;
    let pki = Pki::new();
    let emulator = Emulator::start();
    let mut options = GatewayOptions::new(emulator.endpoint_url());
    options.auth = pki.auth();
    options.server_toml = format!("handshake_timeout_ms = 500\nmax_connections = {SLOTS}");
    let gw = Gateway::start(options).await;
    // Every slot held by a connection that finished TLS and never sent the HTTP/2 preface.
    let mut silent = Vec::new();
    for _ in 0..SLOTS {
        silent.push(silent_after_tls(&pki, &gw).await);
    }
    for socket in &mut silent {
        let mut buf = [0u8; 64];
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "a connection silent after TLS is cut");
    }
    assert_a_valid_certificate_is_served(&pki, &gw).await;
    let metrics = support::prometheus::scrape(gw.admin).await;
    assert_eq!(
        metrics.value(
            "datashare_gateway_connections_refused_total",
            &[("reason", "no_preface")]
        ),
        Some(SLOTS as f64)
    );
}
