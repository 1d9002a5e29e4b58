//! The emulator as CloudTrail: trail files and signed digest files delivered to a real S3
//! server (moto's), read back with aws-sdk-s3 and checked the way the AWS CLI's
//! `validate-logs` checks them; LookupEvents and ListPublicKeys through the real
//! aws-sdk-cloudtrail client.

use crate::support;

use std::io::Read as _;
use std::time::Duration;

use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use aws_sdk_cloudtrail::error::ProvideErrorMetadata;
use aws_sdk_cloudtrail::primitives::DateTime;
use aws_sdk_cloudtrail::types::{LookupAttribute, LookupAttributeKey};
use aws_sdk_redshift::operation::RequestId;
use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use support::emulator::*;
use support::s3::{Moto, create_bucket, keys, object, s3_client};
use support::wait::until;

const BUCKET: &str = "trail-bucket";

/// moto's S3 with the trail's bucket, and an emulator delivering to it: every `interval_ms`
/// (an hour: only when flushed) with `extra` flags.
struct Trail {
    emu: Emulator,
    s3: aws_sdk_s3::Client,
    // Dropped last: the emulator's final delivery at shutdown has somewhere to go.
    _moto: Moto,
}

impl Trail {
    async fn start(interval_ms: u64, extra: &[&str]) -> Trail {
        let moto = Moto::start().await;
        create_bucket(&moto.endpoint, BUCKET).await;
        let interval = interval_ms.to_string();
        let mut args = vec![
            "--trail-s3-endpoint",
            moto.endpoint.as_str(),
            "--trail-bucket",
            BUCKET,
            "--trail-interval-ms",
            interval.as_str(),
        ];
        args.extend_from_slice(extra);
        let emu = Emulator::start_with_args(&args);
        Trail {
            s3: s3_client(&moto.endpoint).await,
            emu,
            _moto: moto,
        }
    }

    async fn keys(&self, prefix: &str) -> Vec<String> {
        keys(&self.s3, BUCKET, prefix).await
    }

    /// The decompressed bytes of a trail file.
    async fn inflated(&self, key: &str) -> Vec<u8> {
        gunzip(&object(&self.s3, BUCKET, key).await)
    }

    async fn json(&self, key: &str) -> Value {
        serde_json::from_slice(&self.inflated(key).await).expect("a trail file is JSON")
    }

    /// Every record in the account's log files, in file order.
    async fn records(&self, account: &str) -> Vec<Value> {
        let mut records = Vec::new();
        for key in self.keys(&log_prefix(account)).await {
            let file = self.json(&key).await;
            records.extend(file["Records"].as_array().cloned().unwrap_or_default());
        }
        records
    }
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("gzip");
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip")
}

fn log_prefix(account: &str) -> String {
    format!("AWSLogs/{account}/CloudTrail/")
}

fn digest_prefix(account: &str) -> String {
    format!("AWSLogs/{account}/CloudTrail-Digest/")
}

/// Checks a log file key against CloudTrail's layout after `root` (`[prefix/]AWSLogs/[org/]`):
/// `ACCOUNT/CloudTrail/us-east-1/YYYY/MM/DD/ACCOUNT_CloudTrail_us-east-1_YYYYMMDDTHHmmZ_UNIQUE.json.gz`.
fn assert_log_key(key: &str, root: &str, account: &str) {
    let rest = key
        .strip_prefix(root)
        .unwrap_or_else(|| panic!("{key} is not under {root}"));
    let parts: Vec<&str> = rest.split('/').collect();
    let [acct, "CloudTrail", REGION, yyyy, mm, dd, file] = parts[..] else {
        panic!("{key}: not ACCOUNT/CloudTrail/REGION/YYYY/MM/DD/FILE");
    };
    assert_eq!(acct, account, "{key}");
    let name = file
        .strip_suffix(".json.gz")
        .unwrap_or_else(|| panic!("{key}: not .json.gz"));
    let fields: Vec<&str> = name.split('_').collect();
    let [acct2, "CloudTrail", REGION, stamp, unique] = fields[..] else {
        panic!("{key}: not ACCOUNT_CloudTrail_REGION_STAMP_UNIQUE");
    };
    assert_eq!(acct2, account, "{key}");
    assert_eq!(stamp.len(), 14, "{key}: YYYYMMDDTHHmmZ");
    assert_eq!(
        &stamp[..8],
        format!("{yyyy}{mm}{dd}"),
        "{key}: dated by its folder"
    );
    assert!(stamp.as_bytes()[8] == b'T' && stamp.ends_with('Z'), "{key}");
    assert_eq!(unique.len(), 16, "{key}: 16 random characters");
    assert!(unique.chars().all(|c| c.is_ascii_alphanumeric()), "{key}");
}

/// Checks a digest key: `ACCOUNT/CloudTrail-Digest/us-east-1/YYYY/MM/DD/ACCOUNT_CloudTrail-Digest_us-east-1_TRAIL_us-east-1_YYYYMMDDTHHmmssZ.json.gz`.
fn assert_digest_key(key: &str, root: &str, account: &str, trail: &str) {
    let rest = key
        .strip_prefix(root)
        .unwrap_or_else(|| panic!("{key} is not under {root}"));
    let parts: Vec<&str> = rest.split('/').collect();
    let [acct, "CloudTrail-Digest", REGION, yyyy, mm, dd, file] = parts[..] else {
        panic!("{key}: not ACCOUNT/CloudTrail-Digest/REGION/YYYY/MM/DD/FILE");
    };
    assert_eq!(acct, account, "{key}");
    let expected_head = format!("{account}_CloudTrail-Digest_{REGION}_{trail}_{REGION}_");
    let stamp = file
        .strip_prefix(&expected_head)
        .and_then(|f| f.strip_suffix(".json.gz"))
        .unwrap_or_else(|| panic!("{key}: not {expected_head}STAMP.json.gz"));
    assert_eq!(stamp.len(), 16, "{key}: YYYYMMDDTHHmmssZ");
    assert_eq!(&stamp[..8], format!("{yyyy}{mm}{dd}"), "{key}");
}

/// The emulator's event log records whose recipient is `account`.
fn events_of(emu: &Emulator, account: &str) -> Vec<Value> {
    emu.events()
        .into_iter()
        .filter(|e| e["recipientAccountId"] == account)
        .collect()
}

#[tokio::test]
async fn trail_files_hold_each_accounts_records_in_cloudtrails_layout() {
    let t = Trail::start(3_600_000, &[]).await;
    t.emu
        .consumer()
        .describe_data_shares_for_consumer()
        .send()
        .await
        .expect("consumer call");
    t.emu
        .consumer()
        .associate_data_share_consumer()
        .data_share_arn(SALES_SHARE)
        .associate_entire_account(true)
        .send()
        .await
        .expect("consumer associates");
    t.emu
        .producer()
        .describe_data_shares_for_producer()
        .send()
        .await
        .expect("producer call");
    assert_eq!(t.emu.trail()["undelivered_events"], 3);

    let delivered = t.emu.flush_trail();
    assert_eq!(
        delivered.len(),
        4,
        "a log file and a digest per account: {delivered:?}"
    );
    for account in [CONSUMER_ACCOUNT, PRODUCER_ACCOUNT] {
        let logs = t.keys(&log_prefix(account)).await;
        assert_eq!(logs.len(), 1, "one file per account and period: {logs:?}");
        assert_log_key(&logs[0], "AWSLogs/", account);
        let digests = t.keys(&digest_prefix(account)).await;
        assert_eq!(digests.len(), 1, "{digests:?}");
        assert_digest_key(&digests[0], "AWSLogs/", account, "datashare-emulator");
        assert_eq!(
            t.records(account).await,
            events_of(&t.emu, account),
            "the file holds the account's records exactly as the event log has them"
        );
    }
    let consumer = t.records(CONSUMER_ACCOUNT).await;
    let names: Vec<&str> = consumer
        .iter()
        .filter_map(|r| r["eventName"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "DescribeDataSharesForConsumer",
            "AssociateDataShareConsumer"
        ]
    );
    assert_eq!(
        consumer[1]["requestParameters"]["dataShareArn"],
        SALES_SHARE
    );

    assert!(
        t.emu.flush_trail().is_empty(),
        "nothing new, nothing delivered"
    );
    let status = t.emu.trail();
    assert_eq!(status["undelivered_events"], 0);
    assert_eq!(status["delivered_objects"], 4);
}

#[tokio::test]
async fn an_organization_trail_with_a_prefix_puts_its_files_under_both() {
    let t = Trail::start(
        3_600_000,
        &[
            "--trail-prefix",
            "audit/ct",
            "--trail-organization-id",
            "o-a1b2c3d4e5",
            "--trail-name",
            "org-trail",
        ],
    )
    .await;
    t.emu
        .consumer()
        .describe_data_shares()
        .send()
        .await
        .expect("call");
    let delivered = t.emu.flush_trail();
    assert_eq!(delivered.len(), 2, "{delivered:?}");
    let root = "audit/ct/AWSLogs/o-a1b2c3d4e5/";
    let logs = t
        .keys(&format!("{root}{CONSUMER_ACCOUNT}/CloudTrail/"))
        .await;
    assert_eq!(logs.len(), 1, "{delivered:?}");
    assert_log_key(&logs[0], root, CONSUMER_ACCOUNT);
    let digests = t
        .keys(&format!("{root}{CONSUMER_ACCOUNT}/CloudTrail-Digest/"))
        .await;
    assert_eq!(digests.len(), 1, "{delivered:?}");
    assert_digest_key(&digests[0], root, CONSUMER_ACCOUNT, "org-trail");
    let digest = t.json(&digests[0]).await;
    assert_eq!(digest["digestS3Object"], digests[0].as_str());
    assert_eq!(digest["logFiles"][0]["s3Object"], logs[0].as_str());
    assert!(
        t.keys("AWSLogs/").await.is_empty(),
        "nothing outside the prefix"
    );
}

#[tokio::test]
async fn events_are_delivered_every_period_without_a_flush() {
    let t = Trail::start(100, &[]).await;
    t.emu
        .consumer()
        .describe_data_shares()
        .send()
        .await
        .expect("call");
    let logs = until(
        Duration::from_secs(10),
        "a log file delivered",
        async || match t.keys(&log_prefix(CONSUMER_ACCOUNT)).await {
            logs if logs.is_empty() => Err(t.emu.trail()),
            logs => Ok(logs),
        },
    )
    .await;
    assert_eq!(t.records(CONSUMER_ACCOUNT).await.len(), 1, "{logs:?}");
}

#[tokio::test]
async fn held_deliveries_wait_for_a_release_or_for_their_seconds() {
    let t = Trail::start(3_600_000, &[]).await;
    t.emu.hold_trail(None);
    t.emu
        .consumer()
        .describe_data_shares()
        .send()
        .await
        .expect("call");
    assert!(
        t.emu.flush_trail().is_empty(),
        "a flush does not pass a hold"
    );
    let status = t.emu.trail();
    assert_eq!(
        (status["held"].clone(), status["undelivered_events"].clone()),
        (json!(true), json!(1))
    );
    assert!(t.keys("AWSLogs/").await.is_empty());
    assert_eq!(
        t.emu.release_trail().len(),
        2,
        "released: delivered at once"
    );
    assert_eq!(t.records(CONSUMER_ACCOUNT).await.len(), 1);

    // A timed hold ends by itself, and the delivery it held back follows without a flush even
    // though the next period is an hour away.
    t.emu.hold_trail(Some(0.5));
    t.emu
        .consumer()
        .describe_data_shares()
        .send()
        .await
        .expect("call");
    until(
        Duration::from_secs(10),
        "the held file delivered",
        async || match t.records(CONSUMER_ACCOUNT).await.len() {
            2 => Ok(()),
            n => Err((n, t.emu.trail())),
        },
    )
    .await;
    assert_eq!(t.emu.trail()["held"], false);
}

#[tokio::test]
async fn a_dropped_event_is_never_delivered_nor_looked_up() {
    let t = Trail::start(3_600_000, &[]).await;
    t.emu.hold_trail(None);
    let consumer = t.emu.consumer();
    consumer
        .describe_data_shares()
        .send()
        .await
        .expect("kept call");
    let dropped = consumer
        .associate_data_share_consumer()
        .data_share_arn(SALES_SHARE)
        .associate_entire_account(true)
        .send()
        .await
        .expect("dropped call");
    let request_id = dropped.request_id().expect("x-amzn-RequestId").to_owned();

    assert_eq!(
        t.emu.drop_event(json!({ "request_id": request_id })),
        (200, json!({ "dropped": 1 }))
    );
    let (status, answer) = t.emu.drop_event(json!({ "event_id": "no-such-event" }));
    assert_eq!(status, 404, "{answer}");
    let (status, _) = t
        .emu
        .drop_event(json!({ "event_id": "a", "request_id": "b" }));
    assert_eq!(status, 400, "exactly one id");

    t.emu.release_trail();
    let records = t.records(CONSUMER_ACCOUNT).await;
    let names: Vec<&str> = records
        .iter()
        .filter_map(|r| r["eventName"].as_str())
        .collect();
    assert_eq!(
        names,
        ["DescribeDataShares"],
        "the dropped event is missing"
    );
    assert!(
        t.emu
            .events()
            .iter()
            .any(|e| e["requestID"] == request_id.as_str()),
        "the emulator's own log still has it"
    );
    let delivered_id = records[0]["eventID"].as_str().expect("eventID").to_owned();
    let (status, answer) = t.emu.drop_event(json!({ "event_id": delivered_id }));
    assert_eq!(status, 409, "already delivered: {answer}");

    let cloudtrail = t.emu.cloudtrail(CONSUMER_KEY, 1);
    let found = cloudtrail.lookup_events().send().await.expect("lookup");
    let names: Vec<&str> = found
        .events()
        .iter()
        .filter_map(|e| e.event_name())
        .collect();
    assert_eq!(names, ["DescribeDataShares"], "LookupEvents lost it too");
}

/// What `validate-logs` would report for one account's trail: every digest's signature
/// (against the published key), its chain to the previous one, and every log file's hash.
async fn integrity_problems(
    t: &Trail,
    account: &str,
    public_der: &[u8],
    fingerprint: &str,
) -> Vec<String> {
    let key = UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, public_der);
    let mut problems = Vec::new();
    let mut previous: Option<(String, String, String, String)> = None;
    // Digest names end in their end time: sorted by key is sorted by time.
    for digest_key in t.keys(&digest_prefix(account)).await {
        let head =
            t.s3.head_object()
                .bucket(BUCKET)
                .key(&digest_key)
                .send()
                .await
                .expect("head digest");
        let meta = head.metadata().cloned().unwrap_or_default();
        assert_eq!(
            meta.get("signature-algorithm").map(String::as_str),
            Some("SHA256withRSA")
        );
        let signature = meta.get("signature").cloned().unwrap_or_default();
        let inflated = t.inflated(&digest_key).await;
        let digest: Value = serde_json::from_slice(&inflated).expect("digest JSON");
        assert_eq!(digest["digestS3Bucket"], BUCKET);
        assert_eq!(digest["digestS3Object"], digest_key.as_str(), "not moved");
        assert_eq!(digest["awsAccountId"], account);
        assert_eq!(digest["digestPublicKeyFingerprint"], fingerprint);
        assert_eq!(digest["digestSignatureAlgorithm"], "SHA256withRSA");
        let hash = hex::encode(Sha256::digest(&inflated));
        let previous_signature = digest["previousDigestSignature"].as_str().unwrap_or("null");
        let signed = format!(
            "{}\n{BUCKET}/{digest_key}\n{hash}\n{previous_signature}",
            digest["digestEndTime"].as_str().unwrap_or_default()
        );
        let valid = hex::decode(&signature)
            .ok()
            .is_some_and(|sig| key.verify(signed.as_bytes(), &sig).is_ok());
        if !valid {
            problems.push(format!(
                "digest {digest_key}: signature verification failed"
            ));
        }
        match &previous {
            None => {
                for member in [
                    "previousDigestS3Bucket",
                    "previousDigestS3Object",
                    "previousDigestHashValue",
                    "previousDigestHashAlgorithm",
                    "previousDigestSignature",
                ] {
                    assert!(
                        digest[member].is_null(),
                        "the first digest's {member}: {digest}"
                    );
                }
            }
            Some((prev_key, prev_hash, prev_signature, prev_end)) => {
                if digest["previousDigestS3Object"] != prev_key.as_str()
                    || digest["previousDigestHashValue"] != prev_hash.as_str()
                    || digest["previousDigestSignature"] != prev_signature.as_str()
                {
                    problems.push(format!("digest {digest_key}: chain broken"));
                }
                assert_eq!(digest["previousDigestS3Bucket"], BUCKET);
                assert_eq!(digest["previousDigestHashAlgorithm"], "SHA-256");
                assert_eq!(
                    digest["digestStartTime"],
                    prev_end.as_str(),
                    "periods follow each other"
                );
            }
        }
        for log in digest["logFiles"].as_array().cloned().unwrap_or_default() {
            let log_key = log["s3Object"].as_str().unwrap_or_default();
            assert_eq!(log["s3Bucket"], BUCKET);
            assert_eq!(log["hashAlgorithm"], "SHA-256");
            let fetched = t.s3.get_object().bucket(BUCKET).key(log_key).send().await;
            let Ok(fetched) = fetched else {
                problems.push(format!("log {log_key}: not found"));
                continue;
            };
            let bytes = fetched.body.collect().await.expect("body").into_bytes();
            let inflated = gunzip(&bytes);
            if hex::encode(Sha256::digest(&inflated))
                != log["hashValue"].as_str().unwrap_or_default()
            {
                problems.push(format!("log {log_key}: hash value doesn't match"));
                continue;
            }
            let records: Value = serde_json::from_slice(&inflated).expect("log JSON");
            let times: Vec<&str> = records["Records"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["eventTime"].as_str())
                .collect();
            assert_eq!(log["newestEventTime"].as_str(), times.iter().max().copied());
            assert_eq!(log["oldestEventTime"].as_str(), times.iter().min().copied());
        }
        previous = Some((
            digest_key.clone(),
            hash,
            signature,
            digest["digestEndTime"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        ));
    }
    problems
}

#[tokio::test]
async fn the_digest_chain_verifies_with_the_published_key_and_shows_an_altered_or_deleted_file() {
    let t = Trail::start(3_600_000, &[]).await;
    for _ in 0..3 {
        t.emu
            .consumer()
            .describe_data_shares()
            .send()
            .await
            .expect("call");
        assert_eq!(t.emu.flush_trail().len(), 2);
    }
    let listed = t
        .emu
        .cloudtrail(CONSUMER_KEY, 1)
        .list_public_keys()
        .send()
        .await
        .expect("ListPublicKeys");
    let [published] = listed.public_key_list() else {
        panic!("one key: {listed:?}");
    };
    let der = published.value().expect("Value").as_ref().to_vec();
    let fingerprint = published.fingerprint().expect("Fingerprint").to_owned();
    let admin = t.emu.digest_public_key();
    assert_eq!(admin["fingerprint"], fingerprint.as_str());
    assert_eq!(
        admin["public_key"],
        base64::engine::general_purpose::STANDARD
            .encode(&der)
            .as_str(),
        "the admin API publishes the same key"
    );
    assert_eq!(fingerprint.len(), 32, "hex MD5");
    let start = published
        .validity_start_time()
        .expect("ValidityStartTime")
        .secs();
    let end = published
        .validity_end_time()
        .expect("ValidityEndTime")
        .secs();
    assert!(start <= end, "{start} {end}");

    assert_eq!(
        integrity_problems(&t, CONSUMER_ACCOUNT, &der, &fingerprint).await,
        Vec::<String>::new(),
        "an untouched trail validates"
    );

    // Alter the first period's log file (its record removed, re-compressed), delete the
    // second's, and change the last digest's body (its signature no longer matches).
    let digests = t.keys(&digest_prefix(CONSUMER_ACCOUNT)).await;
    assert_eq!(digests.len(), 3);
    let mut logs = Vec::new();
    for digest in &digests {
        let log = t.json(digest).await["logFiles"][0]["s3Object"].clone();
        logs.push(log.as_str().expect("one log file a period").to_owned());
    }
    let forged = gzip(br#"{"Records":[]}"#);
    t.s3.put_object()
        .bucket(BUCKET)
        .key(&logs[0])
        .body(forged.into())
        .send()
        .await
        .expect("alter");
    t.s3.delete_object()
        .bucket(BUCKET)
        .key(&logs[1])
        .send()
        .await
        .expect("delete");
    let last = &digests[2];
    let mut doctored = t.json(last).await;
    doctored["logFiles"] = json!([]);
    let signature =
        t.s3.head_object()
            .bucket(BUCKET)
            .key(last)
            .send()
            .await
            .expect("head")
            .metadata()
            .and_then(|m| m.get("signature").cloned())
            .unwrap_or_default();
    t.s3.put_object()
        .bucket(BUCKET)
        .key(last)
        .metadata("signature", signature)
        .metadata("signature-algorithm", "SHA256withRSA")
        .body(gzip(doctored.to_string().as_bytes()).into())
        .send()
        .await
        .expect("doctor");
    assert_eq!(
        integrity_problems(&t, CONSUMER_ACCOUNT, &der, &fingerprint).await,
        [
            format!("log {}: hash value doesn't match", logs[0]),
            format!("log {}: not found", logs[1]),
            format!("digest {last}: signature verification failed"),
        ]
    );
}

#[tokio::test]
async fn list_public_keys_answers_for_the_time_range_asked() {
    let emu = Emulator::start();
    let cloudtrail = emu.cloudtrail(CONSUMER_KEY, 1);
    let now = emu.digest_public_key();
    let listed = cloudtrail.list_public_keys().send().await.expect("now");
    assert_eq!(listed.public_key_list().len(), 1);
    assert_eq!(
        listed.public_key_list()[0].fingerprint(),
        now["fingerprint"].as_str()
    );
    let past = cloudtrail
        .list_public_keys()
        .start_time(DateTime::from_secs(1_000_000_000))
        .end_time(DateTime::from_secs(1_000_003_600))
        .send()
        .await
        .expect("2001");
    assert!(
        past.public_key_list().is_empty(),
        "no key was valid in 2001"
    );
    let err = cloudtrail
        .list_public_keys()
        .start_time(DateTime::from_secs(2_000_000_000))
        .end_time(DateTime::from_secs(1_000_000_000))
        .send()
        .await
        .expect_err("start after end");
    assert!(err.into_service_error().is_invalid_time_range_exception());
}

/// Keeps an account under two lookups a second, as a client must: each lookup starts more
/// than half a second after the previous one ended (a gap from the previous start would not do:
/// the emulator counts arrivals, and one slow arrival bunches two).
struct Pacer {
    first: bool,
}

impl Pacer {
    fn new() -> Pacer {
        Pacer { first: true }
    }

    /// Called right before each lookup, after the previous one has returned.
    async fn next(&mut self) {
        if !std::mem::take(&mut self.first) {
            tokio::time::sleep(Duration::from_millis(550)).await;
        }
    }
}

#[tokio::test]
async fn lookup_events_pages_newest_first_through_the_callers_events_only() {
    let emu = Emulator::start();
    let consumer = emu.consumer();
    for _ in 0..4 {
        consumer
            .describe_data_shares()
            .send()
            .await
            .expect("describe");
    }
    consumer
        .associate_data_share_consumer()
        .data_share_arn(SALES_SHARE)
        .associate_entire_account(true)
        .send()
        .await
        .expect("associate");
    emu.producer()
        .describe_data_shares_for_producer()
        .send()
        .await
        .expect("another account's call");

    let cloudtrail = emu.cloudtrail(CONSUMER_KEY, 1);
    let mut pacer = Pacer::new();
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        pacer.next().await;
        let page = cloudtrail
            .lookup_events()
            .max_results(2)
            .set_next_token(token.clone())
            .send()
            .await
            .expect("a page");
        pages += 1;
        assert!(page.events().len() <= 2);
        seen.extend(page.events().iter().cloned());
        token = page.next_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(pages, 3, "5 events, 2 a page");
    let mut expected = events_of(&emu, CONSUMER_ACCOUNT);
    expected.reverse();
    let ids: Vec<&str> = seen.iter().filter_map(|e| e.event_id()).collect();
    let expected_ids: Vec<&str> = expected
        .iter()
        .filter_map(|e| e["eventID"].as_str())
        .collect();
    assert_eq!(ids, expected_ids, "the caller's events, newest first");

    let associate = &seen[0];
    let record = &expected[0];
    assert_eq!(associate.event_name(), Some("AssociateDataShareConsumer"));
    assert_eq!(associate.read_only(), Some("false"));
    assert_eq!(seen[1].read_only(), Some("true"));
    assert_eq!(associate.access_key_id(), Some(CONSUMER_KEY.0));
    assert_eq!(associate.event_source(), Some("redshift.amazonaws.com"));
    assert_eq!(associate.username(), Some("consumer-admin"));
    let at = time::OffsetDateTime::parse(
        record["eventTime"].as_str().expect("eventTime"),
        &time::format_description::well_known::Rfc3339,
    )
    .expect("RFC 3339");
    assert_eq!(
        associate.event_time().map(DateTime::secs),
        Some(at.unix_timestamp())
    );
    let resources: Vec<(Option<&str>, Option<&str>)> = associate
        .resources()
        .iter()
        .map(|r| (r.resource_type(), r.resource_name()))
        .collect();
    assert_eq!(
        resources,
        [(Some("AWS::Redshift::DataShare"), Some(SALES_SHARE))]
    );
    let embedded: Value =
        serde_json::from_str(associate.cloud_trail_event().expect("CloudTrailEvent"))
            .expect("CloudTrailEvent is JSON");
    assert_eq!(&embedded, record, "the record as the event log has it");

    pacer.next().await;
    let by_resource = cloudtrail
        .lookup_events()
        .lookup_attributes(
            LookupAttribute::builder()
                .attribute_key(LookupAttributeKey::ResourceName)
                .attribute_value(SALES_SHARE)
                .build()
                .expect("attribute"),
        )
        .send()
        .await
        .expect("by resource name");
    let names: Vec<&str> = by_resource
        .events()
        .iter()
        .filter_map(|e| e.event_name())
        .collect();
    assert_eq!(names, ["AssociateDataShareConsumer"]);
    assert_eq!(
        emu.counter("LookupEvents", "throttled"),
        0,
        "paced: never throttled"
    );
}

fn attribute(key: LookupAttributeKey, value: &str) -> LookupAttribute {
    LookupAttribute::builder()
        .attribute_key(key)
        .attribute_value(value)
        .build()
        .expect("attribute")
}

#[tokio::test]
async fn lookup_events_refuses_bad_parameters_with_cloudtrails_exceptions() {
    let emu = Emulator::start();
    for _ in 0..3 {
        emu.consumer()
            .describe_data_shares()
            .send()
            .await
            .expect("describe");
    }
    let cloudtrail = emu.cloudtrail(CONSUMER_KEY, 1);
    let mut pacer = Pacer::new();

    pacer.next().await;
    let err = cloudtrail
        .lookup_events()
        .lookup_attributes(attribute(
            LookupAttributeKey::EventName,
            "DescribeDataShares",
        ))
        .lookup_attributes(attribute(LookupAttributeKey::ReadOnly, "true"))
        .send()
        .await
        .expect_err("two attributes");
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(400));
    assert!(
        err.into_service_error()
            .is_invalid_lookup_attributes_exception()
    );

    for bad in [0, 51] {
        pacer.next().await;
        let err = cloudtrail
            .lookup_events()
            .max_results(bad)
            .send()
            .await
            .expect_err("MaxResults out of range");
        assert!(
            err.into_service_error().is_invalid_max_results_exception(),
            "{bad}"
        );
    }

    pacer.next().await;
    let err = cloudtrail
        .lookup_events()
        .start_time(DateTime::from_secs(2_000_000_000))
        .end_time(DateTime::from_secs(1_900_000_000))
        .send()
        .await
        .expect_err("start after end");
    assert!(err.into_service_error().is_invalid_time_range_exception());

    pacer.next().await;
    let first = cloudtrail
        .lookup_events()
        .lookup_attributes(attribute(
            LookupAttributeKey::EventName,
            "DescribeDataShares",
        ))
        .max_results(1)
        .send()
        .await
        .expect("first page");
    let token = first.next_token().expect("more pages").to_owned();
    pacer.next().await;
    let err = cloudtrail
        .lookup_events()
        .lookup_attributes(attribute(LookupAttributeKey::EventName, "RejectDataShare"))
        .next_token(&token)
        .send()
        .await
        .expect_err("the token with other parameters");
    assert!(err.into_service_error().is_invalid_next_token_exception());
    pacer.next().await;
    let err = cloudtrail
        .lookup_events()
        .next_token("not-a-token")
        .send()
        .await
        .expect_err("a made-up token");
    assert!(err.into_service_error().is_invalid_next_token_exception());
    pacer.next().await;
    let second = cloudtrail
        .lookup_events()
        .lookup_attributes(attribute(
            LookupAttributeKey::EventName,
            "DescribeDataShares",
        ))
        .max_results(5)
        .next_token(&token)
        .send()
        .await
        .expect("the same parameters, another page size");
    assert_eq!(second.events().len(), 2, "the two after the first");

    pacer.next().await;
    let insights = cloudtrail
        .lookup_events()
        .event_category(aws_sdk_cloudtrail::types::EventCategory::Insight)
        .send()
        .await
        .expect("insight events");
    assert!(
        insights.events().is_empty(),
        "the emulator records no Insights events"
    );
}

#[tokio::test]
async fn lookup_events_sees_ninety_days_back_on_the_emulators_clock() {
    let emu = Emulator::start();
    emu.consumer()
        .describe_data_shares()
        .send()
        .await
        .expect("describe");
    let cloudtrail = emu.cloudtrail(CONSUMER_KEY, 1);
    let mut pacer = Pacer::new();
    pacer.next().await;
    let found = cloudtrail.lookup_events().send().await.expect("lookup");
    assert_eq!(found.events().len(), 1);
    emu.advance_clock(89 * 24 * 3600);
    pacer.next().await;
    let found = cloudtrail.lookup_events().send().await.expect("lookup");
    assert_eq!(found.events().len(), 1, "89 days old: still there");
    emu.advance_clock(2 * 24 * 3600);
    pacer.next().await;
    let found = cloudtrail.lookup_events().send().await.expect("lookup");
    assert!(found.events().is_empty(), "91 days old: gone");
}

#[tokio::test]
async fn lookup_events_throttles_above_two_a_second_per_account() {
    let emu = Emulator::start();
    let cloudtrail = emu.cloudtrail(CONSUMER_KEY, 1);
    // Three at once: at most two are let through in any second.
    let (a, b, c) = tokio::join!(
        cloudtrail.lookup_events().send(),
        cloudtrail.lookup_events().send(),
        cloudtrail.lookup_events().send()
    );
    let results = [a, b, c];
    let throttled: Vec<_> = results.into_iter().filter_map(Result::err).collect();
    assert_eq!(throttled.len(), 1, "{throttled:?}");
    let err = &throttled[0];
    assert_eq!(err.code(), Some("ThrottlingException"));
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(400));
    assert_eq!(emu.counter("LookupEvents", "throttled"), 1);
    // Per account: the producer is not held to the consumer's rate.
    emu.cloudtrail(PRODUCER_KEY, 1)
        .lookup_events()
        .send()
        .await
        .expect("another account");
    assert_eq!(emu.counter("LookupEvents", "throttled"), 1);
}

#[tokio::test]
async fn fault_rules_apply_to_lookup_events_in_cloudtrails_error_shape() {
    let emu = Emulator::start();
    emu.inject_fault(json!({"kind": "throttling", "operation": "LookupEvents", "count": 1}));
    let cloudtrail = emu.cloudtrail(CONSUMER_KEY, 1);
    let err = cloudtrail
        .lookup_events()
        .send()
        .await
        .expect_err("injected throttle");
    assert_eq!(err.code(), Some("ThrottlingException"));
    cloudtrail
        .lookup_events()
        .send()
        .await
        .expect("count=1: the next one passes");
    let counters = &emu.counters()["operations"]["LookupEvents"];
    assert_eq!(counters["faults"]["throttling"], 1, "{counters}");
    assert_eq!(
        counters["throttled"], 0,
        "an injected throttle is not the rate's"
    );
    assert_eq!(counters["answered"], 2, "{counters}");
}

#[tokio::test]
async fn cloudtrail_requests_are_sigv4_checked_for_the_cloudtrail_scope() {
    let emu = Emulator::start();
    let err = emu
        .cloudtrail((CONSUMER_KEY.0, "not-the-secret"), 1)
        .lookup_events()
        .send()
        .await
        .expect_err("wrong secret");
    assert_eq!(err.code(), Some("SignatureDoesNotMatch"));
    let err = emu
        .cloudtrail(("AKIAUNKNOWNEXAMPLE00", "x"), 1)
        .lookup_events()
        .send()
        .await
        .expect_err("unknown key");
    assert_eq!(err.code(), Some("InvalidClientTokenId"));
    let target = "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.LookupEvents";
    let (status, headers, body) =
        signed_json_post(emu.api_addr(), "redshift", target, "{}", CONSUMER_KEY);
    assert_eq!(status, 403, "{body}");
    let body: Value = serde_json::from_str(&body).expect("a JSON 1.1 error");
    assert_eq!(body["__type"], "SignatureDoesNotMatch");
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "content-type" && v == "application/x-amz-json-1.1"),
        "{headers:?}"
    );
    let (status, _, body) = signed_json_post(
        emu.api_addr(),
        "cloudtrail",
        "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.CreateTrail",
        "{}",
        CONSUMER_KEY,
    );
    assert_eq!(status, 400);
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("JSON")["__type"],
        "UnknownOperationException"
    );
    let (status, _, body) = signed_json_post(
        emu.api_addr(),
        "cloudtrail",
        target,
        "{not json",
        CONSUMER_KEY,
    );
    assert_eq!(status, 400);
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("JSON")["__type"],
        "SerializationException"
    );
    assert!(
        emu.events().is_empty(),
        "CloudTrail's own calls are not in the event log"
    );
}

#[tokio::test]
async fn a_role_session_looks_up_the_roles_account() {
    let emu = Emulator::start();
    let creds = emu
        .sts_client(PLATFORM_KEY)
        .assume_role()
        .role_arn(CONSUMER_ROLE)
        .role_session_name("dsgw-lookup")
        .external_id(CONSUMER_ROLE_EXTERNAL_ID)
        .source_identity("alice@example.com")
        .send()
        .await
        .expect("assume role")
        .credentials()
        .cloned()
        .expect("credentials");
    emu.session_client(&creds)
        .describe_data_shares()
        .send()
        .await
        .expect("describe as the role");
    let conf = aws_sdk_cloudtrail::Config::builder()
        .behavior_version(aws_sdk_cloudtrail::config::BehaviorVersion::latest())
        .region(aws_sdk_cloudtrail::config::Region::new(REGION))
        .endpoint_url(emu.endpoint_url())
        .credentials_provider(aws_sdk_cloudtrail::config::Credentials::new(
            creds.access_key_id(),
            creds.secret_access_key(),
            Some(creds.session_token().to_owned()),
            None,
            "session",
        ))
        .build();
    let found = aws_sdk_cloudtrail::Client::from_conf(conf)
        .lookup_events()
        .send()
        .await
        .expect("lookup as the role");
    let names: Vec<(Option<&str>, Option<&str>)> = found
        .events()
        .iter()
        .map(|e| (e.event_name(), e.username()))
        .collect();
    // Both land in the role's account: AssumeRole (its resource owner) and the call it made.
    assert_eq!(
        names,
        [
            (Some("DescribeDataShares"), Some("dsgw-lookup")),
            (Some("AssumeRole"), Some("datashare-gateway")),
        ]
    );
    let assume = &found.events()[1];
    let kinds: Vec<Option<&str>> = assume
        .resources()
        .iter()
        .map(|r| r.resource_type())
        .collect();
    assert_eq!(
        kinds,
        [
            Some("AWS::IAM::Role"),
            Some("AWS::IAM::AccessKey"),
            Some("AWS::STS::AssumedRole")
        ]
    );
}

#[tokio::test]
async fn a_signing_key_file_is_the_published_key_and_bad_settings_stop_the_start() {
    use aws_lc_rs::encoding::AsDer as _;
    use aws_lc_rs::signature::KeyPair as _;
    let dir = tempfile::tempdir().expect("temp dir");
    let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("key");
    let path = dir.path().join("digest-key.der");
    std::fs::write(&path, key.as_der().expect("PKCS#8").as_ref()).expect("write key");
    let emu = Emulator::start_with_args(&["--digest-signing-key", path.to_str().expect("utf-8")]);
    let published = base64::engine::general_purpose::STANDARD
        .decode(
            emu.digest_public_key()["public_key"]
                .as_str()
                .expect("public_key"),
        )
        .expect("base64");
    assert_eq!(
        published,
        key.public_key().as_ref(),
        "PKCS#1 DER of the file's key"
    );
    drop(emu);

    let junk = dir.path().join("junk.pem");
    std::fs::write(
        &junk,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .expect("write junk");
    for (args, named) in [
        (
            vec!["--digest-signing-key", junk.to_str().expect("utf-8")],
            "junk.pem",
        ),
        (
            vec![
                "--trail-s3-endpoint",
                "http://127.0.0.1:1",
                "--trail-bucket",
                "Not_A_Bucket",
            ],
            "trail.bucket",
        ),
        (
            vec![
                "--trail-s3-endpoint",
                "http://127.0.0.1:1",
                "--trail-bucket",
                "b-ok",
                "--trail-interval-ms",
                "1",
            ],
            "trail.delivery_interval_ms",
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_datashare-gateway"))
            .args([
                "emulator",
                "--listen",
                "127.0.0.1:0",
                "--admin",
                "127.0.0.1:0",
            ])
            .args(&args)
            .output()
            .expect("run the emulator");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started");
        assert!(out.stdout.is_empty(), "{args:?}: no ready line");
        assert!(stderr.contains(named), "{args:?}: {stderr}");
    }
}
