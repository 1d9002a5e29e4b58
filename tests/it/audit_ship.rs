//! The trail leaves the box (issue 14), through the real gateway process and a real
//! S3-protocol server (moto's): signed checkpoints make a trail cut short detectable, locally and
//! from the shipped copies alone; sealed files and checkpoints are shipped once, create-only,
//! with their checksum and a COMPLIANCE retention; calls go on while S3 is down and everything
//! is shipped exactly once when it is back, also across a `kill -9` between an upload and its
//! answer; no secret reaches the logs, the records or the objects.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use sha2::{Digest, Sha256};
use support::emulator::Emulator;
use support::gateway::{self, Gateway, GatewayOptions, PROVISIONED_NS, REPORTING, SALES_SHARE};
use support::prometheus::scrape;
use support::s3::{self, Mode, Moto, Proxy};

pub(crate) const BUCKET: &str = "dsgw-audit-trail";
const INSTANCE: &str = "gw-test";
const PREFIX: &str = "trail/gw-test/";

/// Bounds every wait for something the gateway does on its own.
const PATIENCE: Duration = Duration::from_secs(60);

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_datashare-gateway")
}

/// Runs the binary; (exit code, stdout + stderr).
fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(bin())
        .args(args)
        .env("AWS_ACCESS_KEY_ID", "AKIDVERIFIER")
        .env("AWS_SECRET_ACCESS_KEY", "verifier-secret")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("run datashare-gateway");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// `audit keygen --out DIR/name`: (private key, public key).
pub(crate) fn keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let key = dir.join(name);
    let (code, out) = run(&["audit", "keygen", "--out", key.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{out}");
    (key.clone(), PathBuf::from(format!("{}.pub", key.display())))
}

/// The emulator, moto's S3 with the locked bucket, a TCP proxy in front of it, and a checkpoint
/// key pair: what every test here starts from.
struct World {
    emulator: Emulator,
    moto: Moto,
    proxy: Proxy,
    key: PathBuf,
    public: PathBuf,
    keys: tempfile::TempDir,
}

impl World {
    async fn start() -> World {
        let emulator = Emulator::start();
        let moto = Moto::start().await;
        s3::create_locked_bucket(&moto.endpoint, BUCKET).await;
        let proxy = Proxy::start(&moto.endpoint).await;
        let keys = tempfile::tempdir().expect("tmp");
        let (key, public) = keygen(keys.path(), "checkpoint.key");
        World {
            emulator,
            moto,
            proxy,
            key,
            public,
            keys,
        }
    }

    /// The gateway's options: checkpoints and shipping through the proxy.
    fn options(&self) -> GatewayOptions {
        options(&self.emulator, &self.key, &self.proxy.endpoint)
    }
}

pub(crate) fn options(emulator: &Emulator, key: &Path, s3_endpoint: &str) -> GatewayOptions {
    let mut options = GatewayOptions::new(emulator.endpoint_url());
    options.server_toml = format!("instance = \"{INSTANCE}\"\n");
    options.audit_toml = format!(
        "[audit.checkpoint]\nsigning_key_file = {key:?}\ninterval_records = 10\ninterval_secs = 1\n\n\
         [audit.ship]\nbucket = \"{BUCKET}\"\nprefix = \"trail\"\nregion = \"us-east-1\"\n\
         endpoint_url = \"{s3_endpoint}\"\nforce_path_style = true\n\
         object_lock_mode = \"COMPLIANCE\"\nretention_days = 1\nseal_interval_secs = 1\n"
    );
    options
}

pub(crate) async fn calls(gw: &Gateway, n: usize, tag: &str) {
    let mut client = gw.client().await;
    for i in 0..n {
        let mut request = gateway::as_caller(
            REPORTING,
            gateway::namespace_request(SALES_SHARE, PROVISIONED_NS),
        );
        request
            .metadata_mut()
            .insert("x-request-id", format!("{tag}-{i}").parse().expect("ascii"));
        client
            .associate_consumer(request)
            .await
            .unwrap_or_else(|status| panic!("call {tag}-{i}: {status:?}\n{}", gw.logs()));
    }
}

/// The key prefix of the trail in `dir`: `<prefix>/<instance>/<trail id>/`.
fn trail_prefix(dir: &Path) -> String {
    let id = std::fs::read_to_string(dir.join("trail-id")).expect("the trail id");
    format!("{PREFIX}{}/", id.trim_end())
}

/// The local files the gateway ships, by object key: audit files and checkpoints.
fn local_objects(dir: &Path) -> Vec<(String, PathBuf)> {
    let trail = trail_prefix(dir);
    let mut found = Vec::new();
    for (sub, key_dir) in [("", ""), ("checkpoints", "checkpoints/")] {
        for entry in std::fs::read_dir(dir.join(sub)).expect("read dir") {
            let path = entry.expect("entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_owned();
            let shipped = (name.starts_with("audit-") && name.ends_with(".jsonl"))
                || (name.starts_with("checkpoint-") && name.ends_with(".txt"));
            if shipped {
                found.push((format!("{trail}{key_dir}{name}"), path));
            }
        }
    }
    found.sort();
    found
}

fn sha256_b64(path: &Path) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(Sha256::digest(std::fs::read(path).expect("read")))
}

pub(crate) async fn metric(gw: &Gateway, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape(gw.admin).await.value(name, labels).unwrap_or(0.0)
}

/// Waits until the gateway reports nothing unshipped (the open file sealed and shipped too).
pub(crate) async fn wait_all_shipped(gw: &Gateway) {
    let done = tokio::time::timeout(PATIENCE, async {
        loop {
            let scraped = scrape(gw.admin).await;
            let unshipped = scraped.value("datashare_gateway_audit_unshipped_bytes", &[]);
            let shipped = scraped
                .value(
                    "datashare_gateway_audit_ship_total",
                    &[("result", "shipped")],
                )
                .unwrap_or(0.0)
                + scraped
                    .value(
                        "datashare_gateway_audit_ship_total",
                        &[("result", "already_present")],
                    )
                    .unwrap_or(0.0);
            if unshipped == Some(0.0) && shipped > 0.0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(
        done.is_ok(),
        "not everything was shipped; logs:\n{}",
        gw.logs()
    );
}

/// Waits until the unshipped-bytes gauge exceeds `floor`; returns it.
async fn unshipped_above(gw: &Gateway, floor: f64) -> f64 {
    let grown = tokio::time::timeout(PATIENCE, async {
        loop {
            let now = metric(gw, "datashare_gateway_audit_unshipped_bytes", &[]).await;
            if now > floor {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    grown.unwrap_or_else(|_| panic!("unshipped bytes stay at {floor} while S3 is down"))
}

/// Every local audit file and checkpoint is in the bucket exactly once (one version), and
/// nothing else is.
async fn assert_shipped_exactly_once(moto: &Moto, dir: &Path) {
    let local = local_objects(dir);
    let versions = s3::versions(&moto.endpoint, BUCKET, &trail_prefix(dir)).await;
    let keys: Vec<&str> = versions.iter().map(|(k, _)| k.as_str()).collect();
    let expected: Vec<&str> = local.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, expected, "one version per file, no more, no fewer");
}

fn verify(args: &[&str]) -> (i32, String) {
    let mut all = vec!["audit", "verify"];
    all.extend_from_slice(args);
    run(&all)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let path = entry.expect("entry").path();
        let target = to.join(path.file_name().expect("name"));
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).expect("copy");
        }
    }
}

fn newest_audit_file(dir: &Path) -> PathBuf {
    local_objects(dir)
        .into_iter()
        .map(|(_, p)| p)
        .rfind(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .expect("an audit file")
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_files_and_checkpoints_ship_locked_and_a_cut_trail_is_caught_from_s3_alone() {
    let world = World::start().await;
    let (moto, key, public, keys) = (&world.moto, &world.key, &world.public, &world.keys);
    let mut gw = Gateway::start(world.options()).await;
    calls(&gw, 25, "first").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    calls(&gw, 25, "second").await;
    wait_all_shipped(&gw).await;
    assert!(gw.terminate().await, "clean exit; logs:\n{}", gw.logs());
    let dir = gw.audit_dir.clone();

    // Checkpoints were made (by count, by time, at seals and at shutdown) and recorded.
    let records = gateway::audit_records(&dir);
    let checkpoint_records = records.iter().filter(|r| r["kind"] == "checkpoint").count();
    let checkpoint_files = local_objects(&dir)
        .iter()
        .filter(|(k, _)| k.contains("/checkpoints/"))
        .count();
    assert!(checkpoint_files >= 3, "{checkpoint_files} checkpoints");
    assert_eq!(
        checkpoint_records, checkpoint_files,
        "one record per checkpoint"
    );
    let audit_files = local_objects(&dir).len() - checkpoint_files;
    assert!(audit_files >= 2, "sealed by time: {audit_files} files");

    // In the bucket exactly once each, read back with boto3: COMPLIANCE retention, the
    // checksum S3 stored is the local file's, and the object cannot be replaced or deleted.
    assert_shipped_exactly_once(moto, &dir).await;
    let python = s3::venv_tool("DATASHARE_GATEWAY_TEST_PYTHON", "python");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/s3_readback.py");
    let trail = trail_prefix(&dir);
    let out = Command::new(python)
        .args([s(&script), &moto.endpoint, BUCKET, &trail])
        .output()
        .expect("run the boto3 read-back");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    for (object_key, path) in local_objects(&dir) {
        let object = &read["objects"][&object_key];
        assert_eq!(object["versions"], 1, "{object_key}: {object}");
        assert_eq!(object["lock_mode"], "COMPLIANCE", "{object_key}: {object}");
        assert!(object["retain_until"].is_string(), "{object_key}: {object}");
        let local = sha256_b64(&path);
        assert_eq!(object["stored_sha256"], local.as_str(), "{object_key}");
        assert_eq!(object["body_sha256"], local.as_str(), "{object_key}");
    }
    assert_eq!(read["probe"]["overwrite"], "PreconditionFailed", "{read}");
    assert_eq!(read["probe"]["delete_version"], "AccessDenied", "{read}");

    // An untouched trail verifies against its checkpoints, local and shipped.
    let shipped = format!("s3://{BUCKET}/{trail}checkpoints/");
    let from_s3 = [
        "--checkpoints",
        shipped.as_str(),
        "--s3-endpoint-url",
        moto.endpoint.as_str(),
        "--s3-force-path-style",
    ];
    let (code, out) = verify(&[s(&dir), "--public-key", s(public)]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("signed checkpoint(s) verify"), "{out}");
    let mut args = vec![s(&dir), "--public-key", s(public)];
    args.extend_from_slice(&from_s3);
    let (code, out) = verify(&args);
    assert_eq!(code, 0, "{out}");

    // Records cut off the end: caught by the local checkpoints, and by the shipped ones once
    // the local checkpoints are gone too. Without the key, the chain alone cannot tell.
    let scratch = tempfile::tempdir().expect("tmp");
    let cut = scratch.path().join("cut");
    copy_dir(&dir, &cut);
    let newest = newest_audit_file(&cut);
    let text = std::fs::read_to_string(&newest).expect("read");
    let kept: Vec<&str> = text.lines().collect();
    let kept = &kept[..kept.len() - 2];
    std::fs::write(&newest, format!("{}\n", kept.join("\n"))).expect("truncate");
    let (code, out) = verify(&[s(&cut)]);
    assert_eq!(code, 0, "the chain alone does not see a clean cut: {out}");
    let (code, out) = verify(&[s(&cut), "--public-key", s(public)]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("checkpoint-") && out.contains("cut off"),
        "{out}"
    );
    std::fs::remove_dir_all(cut.join("checkpoints")).expect("rm checkpoints");
    let kept_elsewhere = dir.join("checkpoints");
    let (code, out) = verify(&[
        s(&cut),
        "--public-key",
        s(public),
        "--checkpoints",
        s(&kept_elsewhere),
    ]);
    assert_eq!(code, 1, "checkpoints kept in another directory: {out}");
    let mut args = vec![s(&cut), "--public-key", s(public)];
    args.extend_from_slice(&from_s3);
    let (code, out) = verify(&args);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("s3://{BUCKET}/{trail}checkpoints/checkpoint-")),
        "{out}"
    );

    // The newest file deleted.
    let gone = scratch.path().join("gone");
    copy_dir(&dir, &gone);
    std::fs::remove_file(newest_audit_file(&gone)).expect("rm");
    let (code, out) = verify(&[s(&gone), "--public-key", s(public)]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("cut off"), "{out}");

    // A checkpoint signed with another key is rejected, wherever it is put.
    let (other_key, other_public) = keygen(keys.path(), "other.key");
    let forged = scratch.path().join("forged");
    copy_dir(&dir, &forged);
    let signer = ed25519_dalek::SigningKey::from_pkcs8_pem(
        &std::fs::read_to_string(&other_key).expect("read"),
    )
    .expect("key");
    let note = forge(&signer, 1_000_000);
    std::fs::write(
        forged.join("checkpoints/checkpoint-00000000000001000000.txt"),
        note,
    )
    .expect("write");
    let (code, out) = verify(&[s(&forged), "--public-key", s(public)]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not signed by the given public key"), "{out}");
    // ... and the genuine ones do not verify with the other key either.
    let (code, out) = verify(&[s(&dir), "--public-key", s(&other_public)]);
    assert_eq!(code, 1, "{out}");
    // After a key rotation both keys are given: each checkpoint must be signed by one of
    // them. The genuine trail verifies; the other key's checkpoint now passes its signature
    // check, and what it claims (a million records) is then found missing.
    let both = ["--public-key", s(public), "--public-key", s(&other_public)];
    let mut args = vec![s(&dir)];
    args.extend_from_slice(&both);
    let (code, out) = verify(&args);
    assert_eq!(code, 0, "{out}");
    let mut args = vec![s(&forged)];
    args.extend_from_slice(&both);
    let (code, out) = verify(&args);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("seq 1000000") && out.contains("cut off"),
        "{out}"
    );

    // No secret in the logs, the records or the objects.
    let private_pem = std::fs::read_to_string(key).expect("key");
    let private_body: String = private_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let secrets = [
        private_body.as_str(),
        "PRIVATE KEY",
        gateway::CONSUMER_SECRET_KEY,
        "Signature=",
    ];
    let client = s3::s3_client(&moto.endpoint).await;
    let mut texts = vec![("logs".to_owned(), gw.logs())];
    for (object_key, path) in local_objects(&dir) {
        texts.push((
            path.display().to_string(),
            std::fs::read_to_string(&path).expect("read"),
        ));
        let body = s3::object(&client, BUCKET, &object_key).await;
        texts.push((object_key, String::from_utf8_lossy(&body).into_owned()));
    }
    for (name, text) in &texts {
        for secret in secrets {
            assert!(!text.contains(secret), "{secret:?} in {name}");
        }
    }
}

/// A checkpoint for `seq` signed by `key`, made the way the gateway makes them.
fn forge(key: &ed25519_dalek::SigningKey, seq: u64) -> String {
    use ed25519_dalek::Signer;
    let origin = format!("datashare-gateway/{INSTANCE}");
    let text = format!(
        "{origin}\n{seq}\n{}\n2026-12-01T00:00:00Z\n",
        "ab".repeat(32)
    );
    let mut id = Sha256::new();
    id.update(origin.as_bytes());
    id.update(b"\n\x01");
    id.update(key.verifying_key().as_bytes());
    let mut blob = id.finalize()[..4].to_vec();
    blob.extend_from_slice(&key.sign(text.as_bytes()).to_bytes());
    format!(
        "{text}\n\u{2014} {origin} {}\n",
        base64::engine::general_purpose::STANDARD.encode(blob)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_go_on_while_s3_is_down_and_everything_ships_exactly_once_when_it_is_back() {
    let world = World::start().await;
    let (moto, proxy, public) = (&world.moto, &world.proxy, &world.public);
    let mut gw = Gateway::start(world.options()).await;
    calls(&gw, 5, "before").await;
    wait_all_shipped(&gw).await;

    proxy.set(Mode::Down);
    calls(&gw, 10, "down-a").await;
    let unshipped_a = unshipped_above(&gw, 0.0).await;
    calls(&gw, 10, "down-b").await;
    let unshipped_b = unshipped_above(&gw, unshipped_a).await;
    assert!(
        unshipped_b > unshipped_a,
        "{unshipped_a} then {unshipped_b}"
    );
    // The gauges follow the seals while an upload is under way: the failure is counted when it
    // ends.
    let counted = tokio::time::timeout(PATIENCE, async {
        while metric(
            &gw,
            "datashare_gateway_audit_ship_total",
            &[("result", "error")],
        )
        .await
            == 0.0
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(counted.is_ok(), "failed uploads are counted");
    assert!(
        gw.logs().contains("shipping to S3 fails"),
        "a warning while it fails"
    );

    proxy.set(Mode::Up);
    wait_all_shipped(&gw).await;
    assert!(gw.terminate().await, "clean exit; logs:\n{}", gw.logs());
    assert_shipped_exactly_once(moto, &gw.audit_dir).await;
    let (code, out) = verify(&[s(&gw.audit_dir), "--public-key", s(public)]);
    assert_eq!(code, 0, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_between_an_upload_and_its_answer_ships_once_without_an_alarm() {
    let world = World::start().await;
    let (moto, proxy) = (&world.moto, &world.proxy);
    let mut gw = Gateway::start(world.options()).await;
    calls(&gw, 5, "before").await;
    wait_all_shipped(&gw).await;
    let shipped_before = s3::versions(&moto.endpoint, BUCKET, PREFIX).await.len();

    // S3 stores the next uploads but the gateway never hears back; it dies waiting.
    proxy.set(Mode::HoldAnswers);
    calls(&gw, 5, "held").await;
    let stored = tokio::time::timeout(PATIENCE, async {
        while s3::versions(&moto.endpoint, BUCKET, PREFIX).await.len() == shipped_before {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(stored.is_ok(), "an upload reached S3; logs:\n{}", gw.logs());
    gw.kill9().await;
    proxy.set(Mode::Up);

    let mut gw = gw.restart().await;
    calls(&gw, 3, "after").await;
    wait_all_shipped(&gw).await;
    let already = metric(
        &gw,
        "datashare_gateway_audit_ship_total",
        &[("result", "already_present")],
    )
    .await;
    let conflicts = metric(
        &gw,
        "datashare_gateway_audit_ship_total",
        &[("result", "conflict")],
    )
    .await;
    assert!(
        already >= 1.0,
        "the re-upload met its own object: {already}"
    );
    assert_eq!(conflicts, 0.0, "no alarm");
    assert!(!gw.logs().contains("ALARM"), "{}", gw.logs());
    assert!(gw.terminate().await, "clean exit; logs:\n{}", gw.logs());
    assert_shipped_exactly_once(moto, &gw.audit_dir).await;
}

#[test]
fn keys_from_openssl_and_from_keygen_are_interchangeable() {
    let dir = tempfile::tempdir().expect("tmp");
    let (key, public) = keygen(dir.path(), "k");
    // openssl derives the same public key from ours ...
    let derived = Command::new("openssl")
        .args(["pkey", "-in", s(&key), "-pubout"])
        .output()
        .expect("openssl (apt install openssl)");
    assert!(derived.status.success());
    assert_eq!(
        String::from_utf8_lossy(&derived.stdout),
        std::fs::read_to_string(&public).expect("pub")
    );
    // ... and ours reads openssl's.
    let theirs = dir.path().join("openssl.key");
    let made = Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out", s(&theirs)])
        .status()
        .expect("openssl");
    assert!(made.success());
    let pem = std::fs::read_to_string(&theirs).expect("read");
    assert!(ed25519_dalek::SigningKey::from_pkcs8_pem(&pem).is_ok());
    // keygen never overwrites.
    let (code, out) = run(&["audit", "keygen", "--out", s(&key)]);
    assert_eq!(code, 2, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_retention_deletes_only_shipped_files() {
    let world = World::start().await;
    let proxy = &world.proxy;
    let mut options = world.options();
    options.audit_toml.push_str("local_retention_days = 1\n");
    let mut gw = Gateway::start(options).await;
    calls(&gw, 5, "shipped").await;
    wait_all_shipped(&gw).await;
    let shipped: Vec<PathBuf> = local_objects(&gw.audit_dir)
        .into_iter()
        .map(|(_, p)| p)
        .collect();

    // Then S3 goes away: what is written now is sealed but not shipped.
    proxy.set(Mode::Down);
    calls(&gw, 5, "unshipped").await;
    assert!(gw.terminate().await, "clean exit; logs:\n{}", gw.logs());
    let unshipped: Vec<PathBuf> = local_objects(&gw.audit_dir)
        .into_iter()
        .map(|(_, p)| p)
        .filter(|p| !shipped.contains(p))
        .collect();
    assert!(!unshipped.is_empty());

    // Everything is now three days old; the next start applies the retention.
    let all: Vec<PathBuf> = local_objects(&gw.audit_dir)
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    let touched = Command::new("touch")
        .arg("-d")
        .arg("3 days ago")
        .args(&all)
        .status()
        .expect("touch");
    assert!(touched.success());
    let gw = gw.restart().await;
    let gone = tokio::time::timeout(PATIENCE, async {
        while shipped.iter().any(|p| p.exists()) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        gone.is_ok(),
        "shipped files past the retention are deleted; logs:\n{}",
        gw.logs()
    );
    for path in &unshipped {
        assert!(
            path.exists(),
            "{} was deleted before it was shipped",
            path.display()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_shutdown_seals_and_ships_the_open_file_with_a_final_checkpoint() {
    let world = World::start().await;
    let (moto, public) = (&world.moto, &world.public);
    let mut options = world.options();
    // Nothing is sealed or checkpointed by time before the shutdown.
    options.audit_toml = options
        .audit_toml
        .replace("interval_secs = 1", "interval_secs = 3600")
        .replace("seal_interval_secs = 1", "seal_interval_secs = 3600");
    let mut gw = Gateway::start(options).await;
    calls(&gw, 3, "last").await;
    assert!(gw.terminate().await, "clean exit; logs:\n{}", gw.logs());

    assert_shipped_exactly_once(moto, &gw.audit_dir).await;
    let records = gateway::audit_records(&gw.audit_dir);
    let last_call = records
        .iter()
        .rfind(|r| r["kind"] == "outcome")
        .expect("an outcome");
    let last_checkpoint = records.last().expect("records");
    assert_eq!(last_checkpoint["kind"], "checkpoint", "{last_checkpoint}");
    assert_eq!(last_checkpoint["reason"], "shutdown", "{last_checkpoint}");
    assert_eq!(last_checkpoint["covers_seq"], last_call["seq"]);
    // The auditor's view, from S3 alone: the trail verifies up to the last call.
    let shipped = format!("s3://{BUCKET}/{}checkpoints/", trail_prefix(&gw.audit_dir));
    let (code, out) = verify(&[
        s(&gw.audit_dir),
        "--public-key",
        s(public),
        "--checkpoints",
        &shipped,
        "--s3-endpoint-url",
        &moto.endpoint,
        "--s3-force-path-style",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("covers seq 1..{}", last_call["seq"])),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_taken_by_other_bytes_is_an_alarm_and_the_local_file_is_kept() {
    let world = World::start().await;
    let moto = &world.moto;
    // Someone else's object where the gateway's first file will go (its trail id known ahead).
    let dir = world.keys.path().join("audit");
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
        .create(&dir)
        .expect("audit dir");
    std::fs::write(dir.join("trail-id"), "0123456789abcdef0123456789abcdef\n").expect("id");
    let taken = format!("{}audit-00000000000000000001.jsonl", trail_prefix(&dir));
    s3::s3_client(&moto.endpoint)
        .await
        .put_object()
        .bucket(BUCKET)
        .key(&taken)
        .body(b"not the gateway's records\n".to_vec().into())
        .send()
        .await
        .expect("put");
    let mut options = world.options();
    options.audit_dir = Some(dir);
    let mut gw = Gateway::start(options).await;
    calls(&gw, 3, "conflict").await;
    let alarmed = tokio::time::timeout(PATIENCE, async {
        loop {
            let conflicts = metric(
                &gw,
                "datashare_gateway_audit_ship_total",
                &[("result", "conflict")],
            )
            .await;
            if conflicts >= 1.0 {
                return conflicts;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(alarmed, Ok(1.0), "one conflict; logs:\n{}", gw.logs());
    assert!(gw.logs().contains("ALARM audit"), "{}", gw.logs());
    assert!(gw.terminate().await, "clean exit; logs:\n{}", gw.logs());
    // The local file stays, unmarked; the object is untouched (one version, not replaced).
    let local = gw.audit_dir.join("audit-00000000000000000001.jsonl");
    assert!(local.exists());
    assert!(
        !gw.audit_dir
            .join(".shipped/audit-00000000000000000001.jsonl")
            .exists()
    );
    let versions = s3::versions(&moto.endpoint, BUCKET, &taken).await;
    assert_eq!(versions.len(), 1, "{versions:?}");
}

/// `audit verify` over the archive, through moto.
fn verify_archive(url: &str, public: &Path, endpoint: &str) -> (i32, String) {
    verify(&[
        url,
        "--public-key",
        s(public),
        "--s3-endpoint-url",
        endpoint,
        "--s3-force-path-style",
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_lost_volume_the_new_trail_ships_under_its_own_id_and_both_trails_verify() {
    let world = World::start().await;
    let (moto, public) = (&world.moto, &world.public);
    // A trail an earlier release made: audit files and no trail id.
    let mut local_only = world.options();
    let ship_at = local_only
        .audit_toml
        .find("[audit.ship]")
        .expect("ship section");
    local_only.audit_toml.truncate(ship_at);
    let mut first = Gateway::start(local_only).await;
    calls(&first, 3, "old-local").await;
    assert!(
        first.terminate().await,
        "clean exit; logs:\n{}",
        first.logs()
    );
    let dir = first.audit_dir.clone();
    std::fs::remove_file(dir.join("trail-id")).expect("an earlier release made none");

    // It keeps shipping under its old keys.
    let mut options = world.options();
    options.audit_dir = Some(dir.clone());
    let mut gw = Gateway::start(options).await;
    calls(&gw, 3, "old").await;
    wait_all_shipped(&gw).await;
    assert!(gw.terminate().await, "clean exit; logs:\n{}", gw.logs());
    assert!(!dir.join("trail-id").exists(), "an old trail gets no id");
    let old_keys = s3::versions(&moto.endpoint, BUCKET, PREFIX).await;
    assert!(old_keys.len() >= 2, "{old_keys:?}");
    for (key, _) in &old_keys {
        let rest = key.strip_prefix(PREFIX).expect("under the instance");
        assert!(
            rest.starts_with("audit-") || rest.starts_with("checkpoints/checkpoint-"),
            "under the old keys: {key}"
        );
    }

    // The volume is lost; the same instance name starts again.
    std::fs::remove_dir_all(&dir).expect("lose the volume");
    let mut gw = gw.restart().await;
    calls(&gw, 5, "new").await;
    wait_all_shipped(&gw).await;
    let conflicts = metric(
        &gw,
        "datashare_gateway_audit_ship_total",
        &[("result", "conflict")],
    )
    .await;
    assert_eq!(conflicts, 0.0, "no conflict; logs:\n{}", gw.logs());
    assert!(!gw.logs().contains("ALARM"), "{}", gw.logs());
    assert!(gw.terminate().await, "clean exit; logs:\n{}", gw.logs());
    let id = std::fs::read_to_string(dir.join("trail-id")).expect("a new trail has an id");
    let id = id.trim_end();
    let new_keys = s3::versions(&moto.endpoint, BUCKET, &trail_prefix(&dir)).await;
    assert_eq!(
        new_keys.len(),
        local_objects(&dir).len(),
        "every new file and checkpoint shipped: {new_keys:?}"
    );
    assert_shipped_exactly_once(moto, &dir).await;
    // The old trail's objects are untouched.
    let all = s3::versions(&moto.endpoint, BUCKET, PREFIX).await;
    assert_eq!(all.len(), old_keys.len() + new_keys.len());

    // The archive: both trails, each against its own checkpoints, named.
    let archive = format!("s3://{BUCKET}/{PREFIX}");
    let (code, out) = verify_archive(&archive, public, &moto.endpoint);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("2 trail(s)"), "{out}");
    assert!(out.contains("the trail without an id"), "{out}");
    assert!(out.contains(&format!("trail {id} (")), "{out}");
    assert_eq!(
        out.matches("signed checkpoint(s) verify").count(),
        2,
        "{out}"
    );
    // The local trail against the instance's checkpoints: its own are picked.
    let (code, out) = verify(&[
        s(&dir),
        "--public-key",
        s(public),
        "--checkpoints",
        &archive,
        "--s3-endpoint-url",
        &moto.endpoint,
        "--s3-force-path-style",
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("{PREFIX}{id}/checkpoints/")), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_marker_on_the_newest_file_or_checkpoint_is_tampering() {
    let world = World::start().await;
    let (moto, public) = (&world.moto, &world.public);
    let mut gw = Gateway::start(world.options()).await;
    calls(&gw, 5, "marked").await;
    wait_all_shipped(&gw).await;
    assert!(gw.terminate().await, "clean exit; logs:\n{}", gw.logs());
    let trail = trail_prefix(&gw.audit_dir);
    let archive = format!("s3://{BUCKET}/{trail}");
    let (code, out) = verify_archive(&archive, public, &moto.endpoint);
    assert_eq!(code, 0, "untouched: {out}");

    // Allowed on a COMPLIANCE bucket: a delete without a version id only adds a marker.
    let objects = local_objects(&gw.audit_dir);
    let newest_file = objects
        .iter()
        .rfind(|(k, _)| k.ends_with(".jsonl"))
        .map(|(k, _)| k.clone())
        .expect("a file");
    let newest_checkpoint = objects
        .iter()
        .rfind(|(k, _)| k.contains("/checkpoints/"))
        .map(|(k, _)| k.clone())
        .expect("a checkpoint");
    let client = s3::s3_client(&moto.endpoint).await;
    for key in [&newest_file, &newest_checkpoint] {
        client
            .delete_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .expect("a delete marker");
    }

    let (code, out) = verify_archive(&archive, public, &moto.endpoint);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("s3://{BUCKET}/{newest_file}")),
        "{out}"
    );
    assert!(
        out.contains(&format!("s3://{BUCKET}/{newest_checkpoint}")),
        "{out}"
    );
    assert!(out.contains("delete marker"), "{out}");
    // The same through --checkpoints, with the local files.
    let (code, out) = verify(&[
        s(&gw.audit_dir),
        "--public-key",
        s(public),
        "--checkpoints",
        &format!("{archive}checkpoints/"),
        "--s3-endpoint-url",
        &moto.endpoint,
        "--s3-force-path-style",
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!("s3://{BUCKET}/{newest_checkpoint}")),
        "{out}"
    );
}

/// Accepts connections and never answers, holding them open.
async fn silent_endpoint() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (endpoint, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_that_never_answers_is_an_error_within_seconds_and_the_backlog_shows_as_files_seal() {
    let world = World::start().await;
    let (endpoint, _held) = silent_endpoint().await;
    let mut options = options(&world.emulator, &world.key, &endpoint);
    options.audit_toml.push_str("timeout_ms = 500\n");
    let gw = Gateway::start(options).await;
    calls(&gw, 3, "held-a").await;
    let errors = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let errors = metric(
                &gw,
                "datashare_gateway_audit_ship_total",
                &[("result", "error")],
            )
            .await;
            if errors >= 1.0 {
                return errors;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(errors.is_ok(), "no error counted; logs:\n{}", gw.logs());
    assert!(
        gw.logs().contains("shipping to S3 fails") && gw.logs().contains("timeout_ms = 500"),
        "{}",
        gw.logs()
    );
    let before = unshipped_above(&gw, 0.0).await;
    calls(&gw, 10, "held-b").await;
    let after = unshipped_above(&gw, before).await;
    assert!(after > before, "{before} then {after}");
    let oldest = tokio::time::timeout(PATIENCE, async {
        loop {
            let age = metric(&gw, "datashare_gateway_audit_oldest_unshipped_seconds", &[]).await;
            if age >= 1.0 {
                return age;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(oldest.is_ok(), "the oldest unshipped file ages");
}
