//! `datashare-gateway audit verify` and `audit keygen`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::audit::{ArchivedTrail, Checkpoints, HmacKey, ObjectStore, Verdict};
use crate::cli::CliError;

/// The exit status of `audit verify` when it could not verify at all (bad arguments, an
/// unreadable key or trail); 1 means tampering was found. clap's own usage errors exit 2 too.
const USAGE_OR_IO: u8 = 2;

/// How long one S3 request of `audit verify` may take.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// `audit` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Verify the hash chain and the sequence of audit files; report the first bad record and
    /// the intents without an outcome. With --public-key, also verify the signed checkpoints and
    /// that the log holds every record they cover (a trail cut short, or its newest file
    /// deleted, is found). Exit status: 0 everything verifies, 1 tampering found (the report
    /// names the record or the checkpoint), 2 usage or I/O error (nothing could be verified).
    Verify {
        /// Audit files, or directories of audit files (`audit-<number>.jsonl`); or one
        /// `s3://bucket/prefix/`: the archive, every trail under it (each trail id, and the trail
        /// without one an earlier release shipped) verified against its own shipped checkpoints
        /// (needs --public-key), and any delete marker on an audit file or checkpoint reported as
        /// tampering.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// File holding the HMAC key the log was written with.
        #[arg(long, conflicts_with = "hmac_key_env")]
        hmac_key_file: Option<PathBuf>,
        /// Environment variable holding the HMAC key the log was written with.
        #[arg(long)]
        hmac_key_env: Option<String>,
        /// The checkpoint signing key's public half (PEM, as `openssl pkey -pubout` or
        /// `audit keygen` writes it). Give it again for each key the trail was signed with
        /// (after a key rotation): each checkpoint must be signed by one of them.
        #[arg(long)]
        public_key: Vec<PathBuf>,
        /// Where to read the checkpoints: a directory, or `s3://bucket/prefix/` (the shipped
        /// ones). Default: the `checkpoints/` directory beside the audit files.
        #[arg(long, requires = "public_key")]
        checkpoints: Option<String>,
        /// An S3-compatible endpoint for `s3://...`; credentials and region come from the
        /// default AWS chain (region us-east-1 if none).
        #[arg(long)]
        s3_endpoint_url: Option<String>,
        /// Path-style S3 addressing (`endpoint/bucket/key`), for S3-compatible stores.
        #[arg(long)]
        s3_force_path_style: bool,
    },
    /// Make an Ed25519 key pair for signing checkpoints: the private key in FILE (PKCS#8 PEM,
    /// mode 0600; an existing file is never overwritten) and the public key in FILE.pub (PEM),
    /// for auditors.
    Keygen {
        /// The private key's file.
        #[arg(long)]
        out: PathBuf,
    },
}

/// Runs an `audit` subcommand.
pub(super) async fn run_command(cmd: AuditCommand) -> Result<ExitCode, CliError> {
    match cmd {
        AuditCommand::Keygen { out } => match crate::audit::generate_key_pair(&out) {
            Ok(public) => {
                println!(
                    "private key: {} (keep it secret: a Kubernetes Secret)\npublic key: {} \
                     (give it to auditors)",
                    out.display(),
                    public.display()
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(err) => {
                eprintln!("error: {err}");
                Ok(ExitCode::from(USAGE_OR_IO))
            }
        },
        AuditCommand::Verify {
            paths,
            hmac_key_file,
            hmac_key_env,
            public_key,
            checkpoints,
            s3_endpoint_url,
            s3_force_path_style,
        } => {
            let key = match HmacKey::load(hmac_key_file.as_deref(), hmac_key_env.as_deref()) {
                Ok(key) => key,
                Err(err) => {
                    eprintln!("error: {err}");
                    return Ok(ExitCode::from(USAGE_OR_IO));
                }
            };
            if let [only] = paths.as_slice()
                && let Some(url) = only.to_str().filter(|p| p.starts_with("s3://"))
            {
                let s3 = S3Options {
                    endpoint_url: s3_endpoint_url,
                    force_path_style: s3_force_path_style,
                };
                return match verify_archive(url, key, &public_key, &s3).await {
                    Ok(code) => Ok(code),
                    Err(err) => {
                        eprintln!("error: {err}");
                        Ok(ExitCode::from(USAGE_OR_IO))
                    }
                };
            }
            let checkpoints = match public_key.is_empty() {
                true => None,
                false => {
                    let source = CheckpointSource {
                        spec: checkpoints,
                        s3: S3Options {
                            endpoint_url: s3_endpoint_url,
                            force_path_style: s3_force_path_style,
                        },
                    };
                    match read_checkpoints(&public_key, &source, &paths).await {
                        Ok(checkpoints) => Some(checkpoints),
                        Err(err) => {
                            eprintln!("error: {err}");
                            return Ok(ExitCode::from(USAGE_OR_IO));
                        }
                    }
                }
            };
            // Reading and hashing whole files blocks; keep it off the async workers.
            let verdict = tokio::task::spawn_blocking(move || {
                crate::audit::verify_and_report(
                    &paths,
                    key,
                    checkpoints.as_ref(),
                    &mut std::io::stdout().lock(),
                )
            })
            .await?;
            Ok(match verdict {
                Verdict::Verified => ExitCode::SUCCESS,
                Verdict::Tampered => ExitCode::FAILURE,
                Verdict::Unreadable => ExitCode::from(USAGE_OR_IO),
            })
        }
    }
}

/// Where `--checkpoints` points.
#[derive(Debug)]
struct CheckpointSource {
    spec: Option<String>,
    s3: S3Options,
}

/// How to reach an `s3://` archive.
#[derive(Debug)]
struct S3Options {
    endpoint_url: Option<String>,
    force_path_style: bool,
}

impl S3Options {
    async fn store(&self, bucket: &str) -> crate::upstream::S3Store {
        let location = crate::upstream::S3Location {
            region: None,
            endpoint_url: self.endpoint_url.as_deref(),
            force_path_style: self.force_path_style,
            attempt_timeout: READ_TIMEOUT,
        };
        crate::upstream::S3Store::connect(bucket, &location).await
    }
}

/// How the report names a trail of the archive.
fn describe(trail: &ArchivedTrail, store: &dyn ObjectStore) -> String {
    match &trail.trail_id {
        Some(id) => format!("trail {id} ({})", store.url(&trail.prefix)),
        None => format!(
            "the trail without an id, shipped by an earlier release ({})",
            store.url(&trail.prefix)
        ),
    }
}

/// The checkpoints of one trail, read from the archive.
async fn archived_checkpoints(
    store: &dyn ObjectStore,
    trail: &ArchivedTrail,
) -> Result<Vec<(String, Vec<u8>)>, CliError> {
    let mut notes = Vec::with_capacity(trail.checkpoints.len());
    for key in &trail.checkpoints {
        notes.push((store.url(key), store.get(key).await?));
    }
    Ok(notes)
}

/// `audit verify s3://bucket/prefix/`: every trail under the prefix, each against its own
/// checkpoints, and the delete markers.
async fn verify_archive(
    url: &str,
    key: Option<HmacKey>,
    public_keys: &[PathBuf],
    s3: &S3Options,
) -> Result<ExitCode, CliError> {
    if public_keys.is_empty() {
        return Err(format!(
            "{url}: verifying the archive needs --public-key (its checkpoints show whether a \
             trail was cut short)"
        )
        .into());
    }
    let verifying = public_keys
        .iter()
        .map(|path| crate::audit::load_verifying_key(path))
        .collect::<Result<Vec<_>, _>>()?;
    let location: crate::upstream::S3Url = url.parse()?;
    let store = s3.store(&location.bucket).await;
    let archive = crate::audit::read_archive(&store, &location.prefix).await?;
    if archive.trails.is_empty() && archive.delete_markers.is_empty() {
        return Err(format!("{url}: no audit files or checkpoints").into());
    }
    let mut verdicts = Vec::new();
    let mut out = std::io::stdout().lock();
    use std::io::Write as _;
    writeln!(out, "{url}: {} trail(s)", archive.trails.len())?;
    for marker in &archive.delete_markers {
        writeln!(
            out,
            "TAMPERED: {marker}: a delete marker hides this object (deleted from the archive \
             without its version id)"
        )?;
        verdicts.push(Verdict::Tampered);
    }
    for trail in &archive.trails {
        writeln!(
            out,
            "\n{}: {} audit file(s), {} checkpoint(s)",
            describe(trail, &store),
            trail.audit_files.len(),
            trail.checkpoints.len()
        )?;
        let scratch = Scratch::new()?;
        for key in &trail.audit_files {
            let name = key.rsplit('/').next().unwrap_or(key);
            std::fs::write(scratch.0.join(name), store.get(key).await?)?;
        }
        let checkpoints = Checkpoints {
            public_keys: verifying.clone(),
            source: describe(trail, &store),
            notes: archived_checkpoints(&store, trail).await?,
            delete_markers: Vec::new(),
        };
        let dir = scratch.0.clone();
        let key = key.clone();
        // Reading and hashing whole files blocks; keep it off the async workers.
        let (verdict, report) = tokio::task::spawn_blocking(move || {
            let mut report = Vec::new();
            let verdict =
                crate::audit::verify_and_report(&[dir], key, Some(&checkpoints), &mut report);
            (verdict, report)
        })
        .await?;
        out.write_all(&report)?;
        verdicts.push(verdict);
    }
    out.flush()?;
    Ok(if verdicts.contains(&Verdict::Tampered) {
        ExitCode::FAILURE
    } else if verdicts.contains(&Verdict::Unreadable) {
        ExitCode::from(USAGE_OR_IO)
    } else {
        ExitCode::SUCCESS
    })
}

/// A private directory for downloaded audit files, removed when dropped.
#[derive(Debug)]
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> std::io::Result<Scratch> {
        use std::os::unix::fs::DirBuilderExt;
        let mut random = [0u8; 8];
        getrandom::fill(&mut random).map_err(std::io::Error::other)?;
        let path = std::env::temp_dir().join(format!(
            "datashare-gateway-verify-{}-{}",
            std::process::id(),
            hex::encode(random)
        ));
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(Scratch(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn read_checkpoints(
    public_keys: &[PathBuf],
    source: &CheckpointSource,
    paths: &[PathBuf],
) -> Result<Checkpoints, CliError> {
    let public_keys = public_keys
        .iter()
        .map(|path| crate::audit::load_verifying_key(path))
        .collect::<Result<Vec<_>, _>>()?;
    let (source_name, notes) = match source.spec.as_deref() {
        Some(url) if url.starts_with("s3://") => {
            let location: crate::upstream::S3Url = url.parse()?;
            let store = source.s3.store(&location.bucket).await;
            let archive = crate::audit::read_archive(&store, &location.prefix).await?;
            let local_id = local_trail_id(paths)?;
            // Several trails under the prefix (a lost volume began a new one): the local trail's.
            let trail = match archive.trails.as_slice() {
                [only] => Some(only),
                several => several.iter().find(|t| t.trail_id == local_id),
            };
            let Some(trail) = trail else {
                if !archive.delete_markers.is_empty() {
                    return Ok(Checkpoints {
                        public_keys,
                        source: url.to_owned(),
                        notes: Vec::new(),
                        delete_markers: archive.delete_markers,
                    });
                }
                let local = local_id
                    .as_deref()
                    .unwrap_or("none: an earlier release's trail");
                return Err(format!(
                    "{url}: {} trails, none the local trail's (trail id {local})",
                    archive.trails.len()
                )
                .into());
            };
            let notes = archived_checkpoints(&store, trail).await?;
            return Ok(Checkpoints {
                public_keys,
                source: describe(trail, &store),
                notes,
                delete_markers: archive.delete_markers,
            });
        }
        Some(dir) => {
            let dir = PathBuf::from(dir);
            (dir.display().to_string(), read_checkpoint_dir(&dir)?)
        }
        None => {
            // Beside the audit files: DIR/checkpoints for each directory (or file's directory).
            let mut dirs: Vec<PathBuf> = paths
                .iter()
                .map(|p| {
                    let dir = if p.is_dir() {
                        p.clone()
                    } else {
                        p.parent().map(Path::to_owned).unwrap_or_default()
                    };
                    dir.join(crate::audit::CHECKPOINT_DIR)
                })
                .collect();
            dirs.sort();
            dirs.dedup();
            let mut notes = Vec::new();
            for dir in &dirs {
                if dir.is_dir() {
                    notes.extend(read_checkpoint_dir(dir)?);
                }
            }
            let names: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            (names.join(", "), notes)
        }
    };
    Ok(Checkpoints {
        public_keys,
        source: source_name,
        notes,
        delete_markers: Vec::new(),
    })
}

/// The trail id of the audit files given (from the first one's directory); `None` for a trail
/// without one.
fn local_trail_id(paths: &[PathBuf]) -> Result<Option<String>, CliError> {
    let Some(first) = paths.first() else {
        return Ok(None);
    };
    let dir = if first.is_dir() {
        first.clone()
    } else {
        first.parent().map(Path::to_owned).unwrap_or_default()
    };
    Ok(crate::audit::read_trail_id(&dir)?)
}

/// The checkpoints (`checkpoint-<seq>.txt`) of a directory, with their paths.
fn read_checkpoint_dir(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, CliError> {
    let mut notes = Vec::new();
    let entries =
        std::fs::read_dir(dir).map_err(|err| format!("cannot list {}: {err}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        let is_checkpoint = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(crate::audit::checkpoint_seq)
            .is_some();
        if is_checkpoint {
            let bytes = std::fs::read(&path)
                .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
            notes.push((path.display().to_string(), bytes));
        }
    }
    Ok(notes)
}
