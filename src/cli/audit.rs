//! `datashare-gateway audit verify` and `audit keygen`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::audit::{Checkpoints, HmacKey, Verdict};
use crate::cli::CliError;

/// The exit status of `audit verify` when it could not verify at all (bad arguments, an
/// unreadable key or trail); 1 means tampering was found. clap's own usage errors exit 2 too.
const USAGE_OR_IO: u8 = 2;

/// `audit` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Verify the hash chain and the sequence of audit files; report the first bad record and
    /// the intents without an outcome. With --public-key, also verify the signed checkpoints and
    /// that the log holds every record they cover (a trail cut short, or its newest file
    /// deleted, is found). Exit status: 0 everything verifies, 1 tampering found (the report
    /// names the record or the checkpoint), 2 usage or I/O error (nothing could be verified).
    Verify {
        /// Audit files, or directories of audit files (`audit-<number>.jsonl`).
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
        /// An S3-compatible endpoint for `--checkpoints s3://...`; credentials and region come
        /// from the default AWS chain (region us-east-1 if none).
        #[arg(long, requires = "checkpoints")]
        s3_endpoint_url: Option<String>,
        /// Path-style S3 addressing (`endpoint/bucket/key`), for S3-compatible stores.
        #[arg(long, requires = "checkpoints")]
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
            let checkpoints = match public_key.is_empty() {
                true => None,
                false => {
                    let source = CheckpointSource {
                        spec: checkpoints,
                        s3_endpoint_url,
                        s3_force_path_style,
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
    s3_endpoint_url: Option<String>,
    s3_force_path_style: bool,
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
            let s3: crate::upstream::S3Url = url.parse()?;
            let location = crate::upstream::S3Location {
                region: None,
                endpoint_url: source.s3_endpoint_url.as_deref(),
                force_path_style: source.s3_force_path_style,
            };
            let store = crate::upstream::S3Store::connect(&s3.bucket, &location).await;
            let notes = crate::audit::read_shipped_checkpoints(&store, &s3.prefix).await?;
            (url.to_owned(), notes)
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
    })
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
