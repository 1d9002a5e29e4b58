//! `datashare-gateway reconcile`: the audit trail matched with CloudTrail over a window.

use std::collections::HashSet;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::CliError;
use crate::config::{Config, Files};
use crate::reconcile::matching::{AwsEvent, Scope, reconcile};
use crate::reconcile::report::{self, Format};
use crate::reconcile::sides::{CallsFromRecords, event_of};

/// How long after a call its event may come (the SDK's retries within the operation timeout,
/// clock skew): events this far past the window are read, to match its last calls.
const MATCH_WINDOW: time::Duration = time::Duration::minutes(15);
/// How long before the window an event of one of its calls may be stamped (clock skew).
const EARLY_EVENT: time::Duration = time::Duration::minutes(1);

/// `reconcile`'s arguments.
#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// The gateway's configuration: the accounts it serves, the roles it acts through, its
    /// default account and its audit directory. Its files need not exist here.
    #[arg(long, short)]
    pub config: PathBuf,
    /// The gateway's side: a directory of audit files per replica (one `--audit` each), or the
    /// audit files of one trail given one by one; or `s3://bucket/prefix` of the archive the trails ship to (every
    /// replica's, every trail id). Default: the configuration's `audit.dir`.
    #[arg(long = "audit")]
    pub audit: Vec<String>,
    /// AWS's side: CloudTrail log files (`.json.gz` or `.json`, `{"Records": [...]}`),
    /// directories searched for them, or `s3://bucket/prefix` of a trail's bucket (its
    /// `AWSLogs/<account>/CloudTrail/<region>/YYYY/MM/DD/` of every served account, in the
    /// gateway's region, for each day of the window: needs --since).
    #[arg(long = "cloudtrail", required = true)]
    pub cloudtrail: Vec<String>,
    /// An organisation trail's organisation id: its files are under `AWSLogs/<org id>/<account>/`.
    #[arg(long)]
    pub org_id: Option<String>,
    /// An S3-compatible endpoint for `s3://...`; credentials and region come from the default
    /// AWS chain.
    #[arg(long)]
    pub s3_endpoint_url: Option<String>,
    /// Path-style S3 addressing (`endpoint/bucket/key`), for S3-compatible stores.
    #[arg(long)]
    pub s3_force_path_style: bool,
    /// The window's start: RFC 3339, or a duration before now (`24h`, `90m`). Default: no start.
    #[arg(long)]
    pub since: Option<String>,
    /// The window's end: RFC 3339, or a duration before now. Default: now.
    #[arg(long)]
    pub until: Option<String>,
    /// A forwarded call younger than this without its event is not yet a finding: CloudTrail
    /// delivers within about 15 minutes.
    #[arg(long, default_value = "15m")]
    pub grace: String,
    /// The gateway's own identity (an IAM user or role ARN) in the single-account form, where it
    /// calls Redshift with its own credentials. Repeatable.
    #[arg(long)]
    pub gateway_identity: Vec<String>,
    /// `table` or `json` (one finding a line).
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
}

/// Runs `reconcile`: exit 0 when nothing was found, 1 when something was, 2 on a usage or I/O
/// error (printed: 1 would read as findings).
pub(super) async fn run(args: ReconcileArgs) -> Result<ExitCode, CliError> {
    match reconcile_window(args).await {
        Ok(code) => Ok(code),
        Err(err) => {
            eprintln!("error: {err}");
            Ok(ExitCode::from(2))
        }
    }
}

async fn reconcile_window(args: ReconcileArgs) -> Result<ExitCode, CliError> {
    let config = Config::load_checking(&args.config, Files::Skip)?;
    let now = OffsetDateTime::now_utc();
    let since = args
        .since
        .as_deref()
        .map(|t| instant("--since", t, now))
        .transpose()?;
    let until = match args.until.as_deref() {
        Some(t) => instant("--until", t, now)?,
        None => now,
    };
    let grace = duration("--grace", &args.grace)?;
    let in_window = |t: OffsetDateTime| since.is_none_or(|s| t >= s) && t <= until;

    let audit = if args.audit.is_empty() {
        vec![config.audit.dir.display().to_string()]
    } else {
        args.audit.clone()
    };
    let default_account = config.upstream.default_account().map(|a| a.to_string());
    let s3_location = crate::upstream::S3Location {
        region: None,
        endpoint_url: args.s3_endpoint_url.as_deref(),
        force_path_style: args.s3_force_path_style,
        attempt_timeout: Duration::from_secs(30),
    };
    // Each trail (a replica's directory, the files given one by one, an archived trail) is one
    // chain: its intents are closed by its own outcomes.
    let (archives, local): (Vec<&String>, Vec<&String>) =
        audit.iter().partition(|a| a.starts_with("s3://"));
    let (dirs, loose): (Vec<&String>, Vec<&String>) =
        local.into_iter().partition(|a| Path::new(a).is_dir());
    let mut local_trails: Vec<Vec<PathBuf>> = dirs.into_iter().map(|d| vec![d.into()]).collect();
    if !loose.is_empty() {
        local_trails.push(loose.into_iter().map(PathBuf::from).collect());
    }
    let mut calls = Vec::new();
    for paths in local_trails {
        let mut trail_calls = CallsFromRecords::new(default_account.clone());
        let files = crate::audit::audit_files(&paths).map_err(|f| format!("audit trail: {f}"))?;
        for file in &files {
            let opened =
                std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?;
            read_records(opened, &file.display().to_string(), &mut trail_calls)?;
        }
        calls.extend(trail_calls.finish());
    }
    for source in archives {
        use crate::audit::ObjectStore;
        let url: crate::upstream::S3Url = source.parse()?;
        let store = crate::upstream::S3Store::connect(&url.bucket, &s3_location).await;
        for trail in crate::audit::read_archive(&store, &url.prefix)
            .await?
            .trails
        {
            let mut files = trail.audit_files;
            files.sort_by_key(|key| {
                crate::audit::segment_number(key.rsplit('/').next().unwrap_or(key))
            });
            let mut trail_calls = CallsFromRecords::new(default_account.clone());
            for key in files {
                let bytes = store.get(&key).await?;
                read_records(&bytes[..], &store.url(&key), &mut trail_calls)?;
            }
            calls.extend(trail_calls.finish());
        }
    }
    calls.retain(|c| in_window(c.received_at));

    let mut served_accounts: HashSet<String> = config.accounts.keys().cloned().collect();
    if let Some(account) = &config.upstream.consumer_account {
        served_accounts.insert(account.clone());
    }

    let mut events = Vec::new();
    let mut keep = |event: AwsEvent| {
        // Events a little after the window may be its calls' (retries, skew).
        if since.is_none_or(|s| event.event_time >= s - EARLY_EVENT)
            && event.event_time <= until + MATCH_WINDOW
        {
            events.push(event);
        }
    };
    for source in &args.cloudtrail {
        if source.starts_with("s3://") {
            let url: crate::upstream::S3Url = source.parse()?;
            let since = since.ok_or_else(|| {
                format!("--cloudtrail {source}: needs --since (the days to read)")
            })?;
            let region = config
                .upstream
                .region
                .clone()
                .ok_or("--cloudtrail s3://...: the configuration names no upstream.region")?;
            let store = crate::upstream::S3Store::connect(&url.bucket, &s3_location).await;
            let mut accounts: Vec<_> = served_accounts.iter().collect();
            accounts.sort();
            for account in accounts {
                for prefix in day_prefixes(
                    &url.prefix,
                    args.org_id.as_deref(),
                    account,
                    &region,
                    since,
                    until + MATCH_WINDOW,
                ) {
                    read_s3_prefix(&store, &prefix, &mut keep).await?;
                }
            }
        } else {
            for path in trail_files(&[PathBuf::from(source)])? {
                read_trail_file(&path, &mut keep)?;
            }
        }
    }
    let scope = Scope {
        gateway_roles: config
            .accounts
            .values()
            .map(|a| a.role_arn.clone())
            .collect(),
        gateway_identities: args.gateway_identity.iter().cloned().collect(),
        served_accounts,
        now,
        grace,
        match_window: MATCH_WINDOW.unsigned_abs(),
    };
    let mut reconciliation = reconcile(&calls, &events, &scope);
    // Events after the window are there only to match its calls.
    reconciliation.findings.retain(|finding| match finding {
        crate::reconcile::matching::Finding::Bypass { event }
        | crate::reconcile::matching::Finding::Unrecorded { event } => in_window(event.event_time),
        _ => true,
    });
    report::write(
        &reconciliation,
        args.format,
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    )?;
    Ok(if reconciliation.findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Reads an audit file's records into `calls`; `name` names it in errors.
fn read_records(file: impl Read, name: &str, calls: &mut CallsFromRecords) -> Result<(), String> {
    for line in std::io::BufReader::new(file).lines() {
        let line = line.map_err(|e| format!("{name}: {e}"))?;
        // A torn last line (a crash) is the verifier's business, not a call.
        if let Ok(record) = serde_json::from_str(&line) {
            calls.record(record);
        }
    }
    Ok(())
}

/// An instant: RFC 3339, or a duration before `now`.
fn instant(flag: &str, text: &str, now: OffsetDateTime) -> Result<OffsetDateTime, String> {
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(t);
    }
    let ago = duration(flag, text)?;
    Ok(now - ago)
}

/// A duration: a number and a unit, `s`, `m`, `h` or `d` (`15m`, `24h`, `7d`).
fn duration(flag: &str, text: &str) -> Result<Duration, String> {
    let refuse = || {
        format!(
            "{flag} {text:?}: must be RFC 3339 (2026-12-07T12:00:00Z) or a number and s, m, h or d (15m)"
        )
    };
    let (digits, unit) = text.split_at(text.len().checked_sub(1).ok_or_else(refuse)?);
    let n: u64 = digits.parse().map_err(|_| refuse())?;
    let secs = match unit {
        "s" => n,
        "m" => n.checked_mul(60).ok_or_else(refuse)?,
        "h" => n.checked_mul(3600).ok_or_else(refuse)?,
        "d" => n.checked_mul(86_400).ok_or_else(refuse)?,
        _ => return Err(refuse()),
    };
    // A century at most: beyond that a date is a typo.
    if secs > 100 * 365 * 86_400 {
        return Err(refuse());
    }
    Ok(Duration::from_secs(secs))
}

/// The CloudTrail files named by `paths`, directories searched.
fn trail_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    let mut stack: Vec<PathBuf> = paths.to_vec();
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            let entries =
                std::fs::read_dir(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            for entry in entries {
                stack.push(
                    entry
                        .map_err(|e| format!("{}: {e}", path.display()))?
                        .path(),
                );
            }
        } else if paths.contains(&path)
            || path.to_string_lossy().ends_with(".json.gz")
            || path.to_string_lossy().ends_with(".json")
        {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The key prefixes of one account's CloudTrail files in `region`, a day each from `since` to
/// `until`: `[prefix/]AWSLogs/[<org id>/]<account>/CloudTrail/<region>/YYYY/MM/DD/`.
fn day_prefixes(
    prefix: &str,
    org_id: Option<&str>,
    account: &str,
    region: &str,
    since: OffsetDateTime,
    until: OffsetDateTime,
) -> Vec<String> {
    let root = match prefix.trim_end_matches('/') {
        "" => String::new(),
        p => format!("{p}/"),
    };
    let org = org_id.map(|id| format!("{id}/")).unwrap_or_default();
    let mut day = since.to_offset(time::UtcOffset::UTC).date();
    let last = until.to_offset(time::UtcOffset::UTC).date();
    let mut out = Vec::new();
    while day <= last {
        out.push(format!(
            "{root}AWSLogs/{org}{account}/CloudTrail/{region}/{:04}/{:02}/{:02}/",
            day.year(),
            u8::from(day.month()),
            day.day()
        ));
        let Some(next) = day.next_day() else { break };
        day = next;
    }
    out
}

/// Reads every log file under `prefix` in the bucket, one at a time.
async fn read_s3_prefix(
    store: &crate::upstream::S3Store,
    prefix: &str,
    each: &mut dyn FnMut(AwsEvent),
) -> Result<(), String> {
    use crate::audit::ObjectStore;
    let versions = store
        .list_versions(prefix)
        .await
        .map_err(|e| e.to_string())?;
    for version in versions.iter().filter(|v| v.latest && !v.delete_marker) {
        if !version.key.ends_with(".json.gz") {
            continue;
        }
        let bytes = store.get(&version.key).await.map_err(|e| e.to_string())?;
        let name = store.url(&version.key);
        read_trail(
            &name,
            Box::new(flate2::read::GzDecoder::new(&bytes[..])),
            each,
        )?;
    }
    Ok(())
}

/// Reads one CloudTrail file's Redshift events, one record at a time: the file's `Records`
/// array is walked, never held whole.
fn read_trail_file(path: &Path, each: &mut dyn FnMut(AwsEvent)) -> Result<(), String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let reader: Box<dyn Read + '_> = if path.to_string_lossy().ends_with(".gz") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    read_trail(&path.display().to_string(), reader, each)
}

/// Reads one CloudTrail log file's records from `reader`; `name` names it in errors.
fn read_trail(
    name: &str,
    reader: Box<dyn Read + '_>,
    each: &mut dyn FnMut(AwsEvent),
) -> Result<(), String> {
    let mut de = serde_json::Deserializer::from_reader(std::io::BufReader::new(reader));
    serde::de::Deserializer::deserialize_map(&mut de, TrailFile { each })
        .map_err(|e| format!("{name}: not a CloudTrail log file: {e}"))
}

/// `{"Records": [...]}`, each record handed on as it is read.
struct TrailFile<'a> {
    each: &'a mut dyn FnMut(AwsEvent),
}

impl<'de> serde::de::Visitor<'de> for TrailFile<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object with a Records array")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            if key == "Records" {
                map.next_value_seed(Records {
                    each: &mut *self.each,
                })?;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

struct Records<'a> {
    each: &'a mut dyn FnMut(AwsEvent),
}

impl<'de> serde::de::DeserializeSeed<'de> for Records<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Records<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of CloudTrail records")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(record) = seq.next_element::<serde_json::Value>()? {
            if let Some(event) = event_of(&record) {
                (self.each)(event);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_instants_parse_and_refuse_naming_the_flag() {
        assert_eq!(duration("--grace", "15m"), Ok(Duration::from_secs(900)));
        assert_eq!(duration("--grace", "2d"), Ok(Duration::from_secs(172_800)));
        for bad in ["", "m", "15", "15x", "-1m", "99999999999999d"] {
            let err = duration("--grace", bad).unwrap_err();
            assert!(err.starts_with("--grace"), "{err}");
        }
        let now = OffsetDateTime::parse("2026-12-07T12:00:00Z", &Rfc3339).unwrap();
        assert_eq!(
            instant("--since", "1h", now),
            Ok(OffsetDateTime::parse("2026-12-07T11:00:00Z", &Rfc3339).unwrap())
        );
        assert_eq!(
            instant("--since", "2026-12-01T00:00:00Z", now),
            Ok(OffsetDateTime::parse("2026-12-01T00:00:00Z", &Rfc3339).unwrap())
        );
    }

    #[test]
    fn a_window_reads_one_prefix_a_day_in_cloudtrails_layout() {
        let at = |t: &str| OffsetDateTime::parse(t, &Rfc3339).unwrap();
        assert_eq!(
            day_prefixes(
                "trails/",
                None,
                "444455556666",
                "us-east-1",
                at("2026-12-31T23:00:00Z"),
                at("2027-01-01T01:00:00Z")
            ),
            [
                "trails/AWSLogs/444455556666/CloudTrail/us-east-1/2026/12/31/",
                "trails/AWSLogs/444455556666/CloudTrail/us-east-1/2027/01/01/"
            ]
        );
        assert_eq!(
            day_prefixes(
                "",
                Some("o-a1b2c3d4e5"),
                "444455556666",
                "us-east-1",
                at("2026-12-07T10:00:00+02:00"),
                at("2026-12-07T11:00:00Z")
            ),
            ["AWSLogs/o-a1b2c3d4e5/444455556666/CloudTrail/us-east-1/2026/12/07/"]
        );
    }

    #[test]
    fn a_trail_file_is_read_record_by_record_gzipped_or_not() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let body = serde_json::json!({"Records": [
            {"eventSource": "sts.amazonaws.com", "eventName": "AssumeRole"},
            {"eventSource": "redshift.amazonaws.com", "eventName": "AssociateDataShareConsumer",
             "eventTime": "2026-12-07T11:00:01Z", "eventID": "e1", "requestID": "r1",
             "recipientAccountId": "444455556666", "userIdentity": {"arn": "arn:aws:iam::444455556666:user/admin"},
             "requestParameters": {"dataShareArn": "arn:aws:redshift:us-east-1:111122223333:datashare:x/s"}}
        ]})
        .to_string();
        let plain = dir.path().join("a.json");
        std::fs::write(&plain, &body).unwrap();
        let gz = dir.path().join("b.json.gz");
        let mut encoder =
            flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), Default::default());
        encoder.write_all(body.as_bytes()).unwrap();
        encoder.finish().unwrap();
        let mut seen = Vec::new();
        for path in trail_files(&[dir.path().to_owned()]).unwrap() {
            read_trail_file(&path, &mut |e| seen.push(e.event_id)).unwrap();
        }
        assert_eq!(seen, ["e1", "e1"]);
        std::fs::write(&plain, "[1, 2]").unwrap();
        assert!(
            read_trail_file(&plain, &mut |_| {})
                .unwrap_err()
                .contains("not a CloudTrail log file")
        );
    }
}
