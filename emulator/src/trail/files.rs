//! Trail files as CloudTrail writes them: where each goes (its S3 key), the gzip JSON log file
//! `{"Records": [...]}`, and the digest file that hashes the log files and chains to the
//! previous digest, with the string its signature is made over. Pure: no I/O, no clock.
//!
//! Sources: AWS's "Finding your CloudTrail log files", "CloudTrail digest file structure" and
//! "Custom implementations of CloudTrail log file integrity validation", and the AWS CLI's
//! `validate-logs` (which hashes the decompressed files and signs the string below).

use std::io::Write as _;

use flate2::Compression;
use flate2::write::GzEncoder;
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;
use time::macros::format_description;

use crate::events::{Event, rfc3339};
use crate::signing::SIGNATURE_ALGORITHM;

/// `hashAlgorithm` and `previousDigestHashAlgorithm`.
pub(crate) const HASH_ALGORITHM: &str = "SHA-256";

/// Where a trail's files go: the bucket, the optional key prefix and organization id.
#[derive(Clone, Debug)]
pub(crate) struct Layout {
    pub(crate) bucket: String,
    pub(crate) key_prefix: Option<String>,
    pub(crate) organization_id: Option<String>,
    pub(crate) trail_name: String,
    /// The trail's home region, the second region of a digest file's name.
    pub(crate) home_region: String,
}

/// One account's files in one region.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Recipient {
    pub(crate) account: String,
    pub(crate) region: String,
}

fn ymd(t: OffsetDateTime) -> String {
    let fmt = format_description!("[year]/[month]/[day]");
    t.format(&fmt).unwrap_or_default()
}

fn minute_stamp(t: OffsetDateTime) -> String {
    let fmt = format_description!("[year][month][day]T[hour][minute]Z");
    t.format(&fmt).unwrap_or_default()
}

fn second_stamp(t: OffsetDateTime) -> String {
    let fmt = format_description!("[year][month][day]T[hour][minute][second]Z");
    t.format(&fmt).unwrap_or_default()
}

impl Layout {
    /// `[prefix/]AWSLogs/[org-id/]ACCOUNT/` (an organization trail's files are under its id).
    fn account_root(&self, account: &str) -> String {
        let mut key = String::new();
        if let Some(prefix) = &self.key_prefix {
            key.push_str(prefix);
            key.push('/');
        }
        key.push_str("AWSLogs/");
        if let Some(org) = &self.organization_id {
            key.push_str(org);
            key.push('/');
        }
        key.push_str(account);
        key.push('/');
        key
    }

    /// `…/CloudTrail/REGION/YYYY/MM/DD/ACCOUNT_CloudTrail_REGION_YYYYMMDDTHHmmZ_UNIQUE.json.gz`,
    /// dated when it is delivered; `unique` is the 16 random characters.
    pub(crate) fn log_file_key(
        &self,
        to: &Recipient,
        delivered: OffsetDateTime,
        unique: &str,
    ) -> String {
        let Recipient { account, region } = to;
        format!(
            "{}CloudTrail/{region}/{}/{account}_CloudTrail_{region}_{}_{unique}.json.gz",
            self.account_root(account),
            ymd(delivered),
            minute_stamp(delivered)
        )
    }

    /// `…/CloudTrail-Digest/REGION/YYYY/MM/DD/ACCOUNT_CloudTrail-Digest_REGION_TRAIL_HOME_YYYYMMDDTHHmmssZ.json.gz`,
    /// dated by the digest's end.
    pub(crate) fn digest_key(&self, to: &Recipient, end: OffsetDateTime) -> String {
        let Recipient { account, region } = to;
        format!(
            "{}CloudTrail-Digest/{region}/{}/{account}_CloudTrail-Digest_{region}_{}_{}_{}.json.gz",
            self.account_root(account),
            ymd(end),
            self.trail_name,
            self.home_region,
            second_stamp(end)
        )
    }
}

/// `{"Records": [...]}`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct LogFileBody<'a> {
    records: &'a [Event],
}

/// A log file ready to upload, and its entry in the next digest.
#[derive(Debug)]
pub(crate) struct LogFile {
    pub(crate) gzip: Vec<u8>,
    pub(crate) entry: LogFileEntry,
}

/// One member of a digest's `logFiles`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LogFileEntry {
    pub(crate) s3_bucket: String,
    pub(crate) s3_object: String,
    /// Hex SHA-256 of the file's decompressed bytes (what `validate-logs` compares).
    pub(crate) hash_value: String,
    pub(crate) hash_algorithm: &'static str,
    pub(crate) newest_event_time: String,
    pub(crate) oldest_event_time: String,
}

/// gzip at the default level.
pub(crate) fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes)?;
    encoder.finish()
}

/// The log file holding `records` (not empty), to go to `key`.
pub(crate) fn log_file(bucket: &str, key: String, records: &[Event]) -> std::io::Result<LogFile> {
    let json = serde_json::to_vec(&LogFileBody { records })?;
    // eventTime is RFC 3339 UTC in whole seconds: its text order is its time order.
    let times = records.iter().map(|e| e.event_time.as_str());
    let newest = times.clone().max().unwrap_or_default().to_owned();
    let oldest = times.min().unwrap_or_default().to_owned();
    Ok(LogFile {
        gzip: gzip(&json)?,
        entry: LogFileEntry {
            s3_bucket: bucket.to_owned(),
            s3_object: key,
            hash_value: hex::encode(Sha256::digest(&json)),
            hash_algorithm: HASH_ALGORITHM,
            newest_event_time: newest,
            oldest_event_time: oldest,
        },
    })
}

/// The last digest of a chain: what the next one names as its previous.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ChainLink {
    pub(crate) bucket: String,
    pub(crate) key: String,
    /// Hex SHA-256 of its decompressed bytes.
    pub(crate) hash: String,
    /// Hex, as in its `x-amz-meta-signature`.
    pub(crate) signature: String,
    pub(crate) end: OffsetDateTime,
}

/// A digest file, members in the order of AWS's sample. The first of a chain has the
/// previous-digest members `null` (and its signature string says `null`, as the AWS CLI
/// expects).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Digest {
    pub(crate) aws_account_id: String,
    pub(crate) digest_start_time: String,
    pub(crate) digest_end_time: String,
    #[serde(rename = "digestS3Bucket")]
    pub(crate) digest_s3_bucket: String,
    #[serde(rename = "digestS3Object")]
    pub(crate) digest_s3_object: String,
    pub(crate) digest_public_key_fingerprint: String,
    pub(crate) digest_signature_algorithm: &'static str,
    pub(crate) newest_event_time: Option<String>,
    pub(crate) oldest_event_time: Option<String>,
    #[serde(rename = "previousDigestS3Bucket")]
    pub(crate) previous_digest_s3_bucket: Option<String>,
    #[serde(rename = "previousDigestS3Object")]
    pub(crate) previous_digest_s3_object: Option<String>,
    pub(crate) previous_digest_hash_value: Option<String>,
    pub(crate) previous_digest_hash_algorithm: Option<&'static str>,
    pub(crate) previous_digest_signature: Option<String>,
    pub(crate) log_files: Vec<LogFileEntry>,
}

impl Digest {
    /// The digest of `log_files` for `to`, covering `start`..`end`, after `previous`.
    pub(crate) fn new(
        layout: &Layout,
        to: &Recipient,
        (start, end): (OffsetDateTime, OffsetDateTime),
        fingerprint: &str,
        previous: Option<&ChainLink>,
        log_files: Vec<LogFileEntry>,
    ) -> Digest {
        let newest = log_files
            .iter()
            .map(|f| &f.newest_event_time)
            .max()
            .cloned();
        let oldest = log_files
            .iter()
            .map(|f| &f.oldest_event_time)
            .min()
            .cloned();
        Digest {
            aws_account_id: to.account.clone(),
            digest_start_time: rfc3339(start),
            digest_end_time: rfc3339(end),
            digest_s3_bucket: layout.bucket.clone(),
            digest_s3_object: layout.digest_key(to, end),
            digest_public_key_fingerprint: fingerprint.to_owned(),
            digest_signature_algorithm: SIGNATURE_ALGORITHM,
            newest_event_time: newest,
            oldest_event_time: oldest,
            previous_digest_s3_bucket: previous.map(|p| p.bucket.clone()),
            previous_digest_s3_object: previous.map(|p| p.key.clone()),
            previous_digest_hash_value: previous.map(|p| p.hash.clone()),
            previous_digest_hash_algorithm: previous.map(|_| HASH_ALGORITHM),
            previous_digest_signature: previous.map(|p| p.signature.clone()),
            log_files,
        }
    }
}

/// The "data signing string": the end time, `BUCKET/KEY` of this digest, the hex SHA-256 of
/// its decompressed bytes and the previous signature (`null` for the first), one a line
/// (assumption: the AWS CLI's separators; the User Guide lists the parts only).
pub(crate) fn string_to_sign(digest: &Digest, digest_json: &[u8]) -> String {
    format!(
        "{}\n{}/{}\n{}\n{}",
        digest.digest_end_time,
        digest.digest_s3_bucket,
        digest.digest_s3_object,
        hex::encode(Sha256::digest(digest_json)),
        digest
            .previous_digest_signature
            .as_deref()
            .unwrap_or("null")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(prefix: Option<&str>, org: Option<&str>) -> Layout {
        Layout {
            bucket: "trail-bucket".into(),
            key_prefix: prefix.map(str::to_owned),
            organization_id: org.map(str::to_owned),
            trail_name: "management".into(),
            home_region: "us-east-1".into(),
        }
    }

    fn at(unix: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(unix).unwrap()
    }

    fn consumer() -> Recipient {
        Recipient {
            account: "444455556666".into(),
            region: "us-east-1".into(),
        }
    }

    #[test]
    fn keys_follow_cloudtrail_s_layout() {
        // 2015-08-17T15:01:31Z, AWS's sample digest end.
        let t = at(1_439_823_691);
        assert_eq!(
            layout(None, None).log_file_key(&consumer(), t, "abcdEFGH12345678"),
            "AWSLogs/444455556666/CloudTrail/us-east-1/2015/08/17/444455556666_CloudTrail_us-east-1_20150817T1501Z_abcdEFGH12345678.json.gz"
        );
        assert_eq!(
            layout(None, None).digest_key(&consumer(), t),
            "AWSLogs/444455556666/CloudTrail-Digest/us-east-1/2015/08/17/444455556666_CloudTrail-Digest_us-east-1_management_us-east-1_20150817T150131Z.json.gz"
        );
        assert_eq!(
            layout(Some("audit/ct"), Some("o-exampleorgid")).digest_key(&consumer(), t),
            "audit/ct/AWSLogs/o-exampleorgid/444455556666/CloudTrail-Digest/us-east-1/2015/08/17/444455556666_CloudTrail-Digest_us-east-1_management_us-east-1_20150817T150131Z.json.gz"
        );
    }

    #[test]
    fn the_first_digest_signs_null_and_the_next_its_predecessor_s_signature() {
        let l = layout(None, None);
        let first = Digest::new(&l, &consumer(), (at(0), at(60)), "fp", None, Vec::new());
        let json = serde_json::to_vec(&first).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert!(value["previousDigestSignature"].is_null());
        assert!(value["previousDigestS3Object"].is_null());
        let s = string_to_sign(&first, &json);
        let lines: Vec<&str> = s.split('\n').collect();
        assert_eq!(lines[0], "1970-01-01T00:01:00Z");
        assert_eq!(lines[1], format!("trail-bucket/{}", first.digest_s3_object));
        assert_eq!(lines[2], hex::encode(Sha256::digest(&json)));
        assert_eq!(lines[3], "null");
        let link = ChainLink {
            bucket: "trail-bucket".into(),
            key: first.digest_s3_object.clone(),
            hash: lines[2].into(),
            signature: "abcd".into(),
            end: at(60),
        };
        let second = Digest::new(
            &l,
            &consumer(),
            (at(60), at(120)),
            "fp",
            Some(&link),
            Vec::new(),
        );
        let json = serde_json::to_vec(&second).unwrap();
        assert!(string_to_sign(&second, &json).ends_with("\nabcd"));
        assert_eq!(second.previous_digest_hash_algorithm, Some("SHA-256"));
    }

    #[test]
    fn a_log_file_hashes_its_decompressed_records_and_spans_their_times() {
        use std::io::Read as _;
        let records: Vec<Event> = Vec::new();
        let file = log_file("b", "k".into(), &records).unwrap();
        let mut text = String::new();
        flate2::read::GzDecoder::new(file.gzip.as_slice())
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, r#"{"Records":[]}"#);
        assert_eq!(
            file.entry.hash_value,
            hex::encode(Sha256::digest(text.as_bytes()))
        );
        assert_eq!(file.entry.hash_algorithm, "SHA-256");
    }
}
