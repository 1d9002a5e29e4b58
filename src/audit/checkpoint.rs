//! Signed checkpoints: what makes a trail cut short detectable.
//!
//! A checkpoint is a C2SP signed note (<https://c2sp.org/signed-note>) whose body names the log
//! (`datashare-gateway/<instance>`), the seq of its last record, that record's hash (the chain
//! head) and the time:
//!
//! ```text
//! datashare-gateway/gw-0
//! 1234
//! 5c0f...e1 (64 hex digits)
//! 2026-12-01T17:00:00.123456789Z
//!
//! — datashare-gateway/gw-0 Ab3x...==
//! ```
//!
//! The signature line is an em dash, the key name (the origin), and base64 of the 4-byte key ID
//! (the first bytes of SHA-256 over name, `\n`, 0x01 and the Ed25519 public key) followed by the
//! Ed25519 signature over the body. Anyone holding the public key can check one; nobody who only
//! reads the logs can make one.

use std::fmt;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

/// The directory of checkpoints inside the audit directory.
pub const CHECKPOINT_DIR: &str = "checkpoints";

/// The signature type of Ed25519 in a signed note's key ID.
const ED25519: u8 = 0x01;

/// The signature line prefix: an em dash and a space.
const SIGNATURE_PREFIX: &str = "\u{2014} ";

/// Why a checkpoint key could not be loaded or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointKeyError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file is not a key of the expected kind.
    #[error("{path}: not {expected} (as `openssl {made_by}` writes it)")]
    Format {
        /// The key file.
        path: PathBuf,
        /// What was expected.
        expected: &'static str,
        /// The openssl command that writes one.
        made_by: &'static str,
    },
    /// No randomness was available for a new key.
    #[error("no randomness for a new key: {0}")]
    Random(String),
}

/// `checkpoint-<seq, 20 digits>.txt`, so that names sort by the seq they cover.
pub(crate) fn checkpoint_name(seq: u64) -> String {
    format!("checkpoint-{seq:020}.txt")
}

/// The seq a checkpoint's file name covers, or `None` for other names.
pub fn checkpoint_seq(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("checkpoint-")?.strip_suffix(".txt")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The origin line of the log of gateway `instance`.
pub(crate) fn origin(instance: &str) -> String {
    format!("datashare-gateway/{instance}")
}

/// Reads an Ed25519 private key (PKCS#8 PEM, as `openssl genpkey -algorithm ed25519` writes it).
pub(crate) fn load_signing_key(path: &Path) -> Result<SigningKey, CheckpointKeyError> {
    let pem = std::fs::read_to_string(path).map_err(|source| CheckpointKeyError::Io {
        path: path.to_owned(),
        source,
    })?;
    SigningKey::from_pkcs8_pem(&pem).map_err(|_| CheckpointKeyError::Format {
        path: path.to_owned(),
        expected: "an Ed25519 private key in PKCS#8 PEM",
        made_by: "genpkey -algorithm ed25519",
    })
}

/// Reads an Ed25519 public key (SubjectPublicKeyInfo PEM, as `openssl pkey -pubout` writes it).
pub fn load_verifying_key(path: &Path) -> Result<VerifyingKey, CheckpointKeyError> {
    let pem = std::fs::read_to_string(path).map_err(|source| CheckpointKeyError::Io {
        path: path.to_owned(),
        source,
    })?;
    VerifyingKey::from_public_key_pem(&pem).map_err(|_| CheckpointKeyError::Format {
        path: path.to_owned(),
        expected: "an Ed25519 public key in PEM",
        made_by: "pkey -pubout",
    })
}

/// Makes a new key pair: the private key in `out` (PKCS#8 PEM, mode 0600, never overwriting a
/// file) and the public key in `out.pub` (SubjectPublicKeyInfo PEM). Returns the public key's
/// path.
pub fn generate_key_pair(out: &Path) -> Result<PathBuf, CheckpointKeyError> {
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut_slice())
        .map_err(|err| CheckpointKeyError::Random(err.to_string()))?;
    let key = SigningKey::from_bytes(&seed);
    let io_error = |path: &Path| {
        let path = path.to_owned();
        move |source| CheckpointKeyError::Io { path, source }
    };
    // PKCS#8 v1 (the seed alone), as `openssl genpkey` writes it: OpenSSL 3.0 cannot read the
    // v2 form (with the public key) that `SigningKey::to_pkcs8_pem` writes.
    let v1 = ed25519_dalek::pkcs8::KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    };
    let private_pem = v1
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|err| io_error(out)(io::Error::other(err.to_string())))?;
    let public_pem = key
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .map_err(|err| io_error(out)(io::Error::other(err.to_string())))?;
    let public_path = PathBuf::from(format!("{}.pub", out.display()));
    let write_new = |path: &Path, mode: u32, text: &[u8]| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)?;
        file.write_all(text)?;
        file.sync_all()
    };
    write_new(out, 0o600, private_pem.as_bytes()).map_err(io_error(out))?;
    write_new(&public_path, 0o644, public_pem.as_bytes()).map_err(io_error(&public_path))?;
    Ok(public_path)
}

/// The 4-byte key ID of an Ed25519 key named `name`.
fn key_id(name: &str, key: &VerifyingKey) -> [u8; 4] {
    let mut hash = Sha256::new();
    hash.update(name.as_bytes());
    hash.update([b'\n', ED25519]);
    hash.update(key.as_bytes());
    let digest = hash.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

/// The key ID as the checkpoint records print it (8 hex digits).
pub(crate) fn key_id_hex(name: &str, key: &VerifyingKey) -> String {
    hex::encode(key_id(name, key))
}

/// What a checkpoint says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CheckpointBody {
    /// `datashare-gateway/<instance>`.
    pub(crate) origin: String,
    /// The seq of the last record it covers.
    pub(crate) seq: u64,
    /// That record's hash (64 hex digits).
    pub(crate) head: String,
    /// When it was made (RFC 3339 UTC).
    pub(crate) time: String,
}

impl CheckpointBody {
    /// The note's text: one line per field, each ending in a newline.
    fn text(&self) -> String {
        format!(
            "{}\n{}\n{}\n{}\n",
            self.origin, self.seq, self.head, self.time
        )
    }

    fn parse(text: &str) -> Result<CheckpointBody, String> {
        let lines: Vec<&str> = text
            .strip_suffix('\n')
            .unwrap_or(text)
            .split('\n')
            .collect();
        let [origin, seq, head, time] = lines.as_slice() else {
            return Err(format!(
                "the body has {} lines; a checkpoint has 4 (origin, seq, head hash, time)",
                lines.len()
            ));
        };
        if !origin.starts_with("datashare-gateway/") {
            return Err(format!(
                "origin {origin:?} is not datashare-gateway/<instance>"
            ));
        }
        let seq = seq
            .parse::<u64>()
            .ok()
            .filter(|seq| *seq > 0)
            .ok_or_else(|| format!("seq {seq:?} is not a positive integer"))?;
        if head.len() != 64
            || !head
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(format!("head {head:?} is not 64 lowercase hex digits"));
        }
        Ok(CheckpointBody {
            origin: (*origin).to_owned(),
            seq,
            head: (*head).to_owned(),
            time: (*time).to_owned(),
        })
    }
}

/// Signs `body` as a signed note, with the origin as the key name.
pub(crate) fn sign(body: &CheckpointBody, key: &SigningKey) -> String {
    let text = body.text();
    let signature = key.sign(text.as_bytes());
    let mut blob = key_id(&body.origin, &key.verifying_key()).to_vec();
    blob.extend_from_slice(&signature.to_bytes());
    format!(
        "{text}\n{SIGNATURE_PREFIX}{} {}\n",
        body.origin,
        B64.encode(blob)
    )
}

/// Why a checkpoint does not verify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BadCheckpoint(pub(crate) String);

impl fmt::Display for BadCheckpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses a signed note and checks that `key` signed it under the body's origin. Signatures by
/// other keys are allowed (a note may carry several, as C2SP says) but one must be by `key`.
pub(crate) fn open(note: &[u8], key: &VerifyingKey) -> Result<CheckpointBody, BadCheckpoint> {
    let bad = |why: String| BadCheckpoint(why);
    let note =
        std::str::from_utf8(note).map_err(|_| bad("not UTF-8 text: not a signed note".into()))?;
    let Some(split) = note.find("\n\n") else {
        return Err(bad(
            "no blank line before the signatures: not a signed note".into(),
        ));
    };
    let (text, signatures) = (&note[..=split], &note[split + 2..]);
    let body = CheckpointBody::parse(text).map_err(bad)?;
    if !signatures.ends_with('\n') {
        return Err(bad("the last signature line has no newline".into()));
    }
    let wanted_id = key_id(&body.origin, key);
    let mut signed = false;
    for line in signatures.lines() {
        let Some(rest) = line.strip_prefix(SIGNATURE_PREFIX) else {
            return Err(bad(format!("{line:?} is not a signature line")));
        };
        let Some((name, blob)) = rest.split_once(' ') else {
            return Err(bad(format!("{line:?} is not a signature line")));
        };
        let blob = B64
            .decode(blob)
            .map_err(|_| bad(format!("the signature of {name:?} is not base64")))?;
        if blob.len() < 5 {
            return Err(bad(format!("the signature of {name:?} is too short")));
        }
        if name != body.origin || blob[..4] != wanted_id {
            continue;
        }
        let signature = Signature::from_slice(&blob[4..])
            .map_err(|_| bad(format!("the signature of {name:?} is not 64 bytes")))?;
        if key.verify(text.as_bytes(), &signature).is_err() {
            return Err(bad(
                "the signature by the given key does not verify: the checkpoint was altered".into(),
            ));
        }
        signed = true;
    }
    if !signed {
        return Err(bad(format!(
            "not signed by the given public key (key ID {} for {})",
            hex::encode(wanted_id),
            body.origin
        )));
    }
    Ok(body)
}

/// Writes a checkpoint to `dir/checkpoints/` durably and atomically (a temporary file, fsync,
/// link, fsync of the directory), so a crash never leaves half a checkpoint to be shipped.
/// Returns the file's path inside the audit directory (`checkpoints/<name>`).
pub(crate) fn write_durable(dir: &Path, seq: u64, note: &str) -> io::Result<String> {
    let checkpoints = dir.join(CHECKPOINT_DIR);
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&checkpoints)?;
    let name = checkpoint_name(seq);
    let temporary = checkpoints.join(format!(".{name}.tmp"));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(note.as_bytes())?;
    file.sync_all()?;
    // A link, not a rename: an existing checkpoint is never replaced.
    std::fs::hard_link(&temporary, checkpoints.join(&name))?;
    std::fs::remove_file(&temporary)?;
    File::open(&checkpoints)?.sync_all()?;
    Ok(format!("{CHECKPOINT_DIR}/{name}"))
}

/// The highest seq a checkpoint in `dir/checkpoints/` covers (0: none).
pub(crate) fn newest_seq(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join(CHECKPOINT_DIR))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.file_name().to_str().and_then(checkpoint_seq))
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> CheckpointBody {
        CheckpointBody {
            origin: origin("gw-0"),
            seq: 42,
            head: "ab".repeat(32),
            time: "2026-12-01T17:00:00Z".into(),
        }
    }

    #[test]
    fn a_signed_checkpoint_opens_with_its_key_and_only_with_it() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let note = sign(&body(), &key);
        assert!(note.starts_with("datashare-gateway/gw-0\n42\n"));
        assert!(note.contains("\n\n\u{2014} datashare-gateway/gw-0 "));
        assert_eq!(open(note.as_bytes(), &key.verifying_key()), Ok(body()));
        let other = SigningKey::from_bytes(&[8; 32]);
        let err = open(note.as_bytes(), &other.verifying_key()).expect_err("other key");
        assert!(
            err.0.contains("not signed by the given public key"),
            "{err}"
        );
    }

    #[test]
    fn an_altered_body_does_not_verify() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let note = sign(&body(), &key).replacen("\n42\n", "\n41\n", 1);
        let err = open(note.as_bytes(), &key.verifying_key()).expect_err("altered");
        assert!(err.0.contains("does not verify"), "{err}");
    }

    #[test]
    fn the_key_id_follows_the_signed_note_rule() {
        // SHA-256("name" || "\n" || 0x01 || public key), first four bytes.
        let key = SigningKey::from_bytes(&[7; 32]).verifying_key();
        let mut expected = Sha256::new();
        expected.update(b"datashare-gateway/gw-0\n\x01");
        expected.update(key.as_bytes());
        assert_eq!(
            key_id_hex("datashare-gateway/gw-0", &key),
            hex::encode(&expected.finalize()[..4])
        );
    }

    #[test]
    fn malformed_notes_are_refused_with_the_reason() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let vk = key.verifying_key();
        let cases: [(&[u8], &str); 4] = [
            (b"datashare-gateway/gw-0\n1\n", "no blank line"),
            (b"x\n1\n2\n3\n\n\xe2\x80\x94 x AAAA\n", "origin"),
            (
                b"datashare-gateway/a\n0\nab\nt\n\n\xe2\x80\x94 x AAAA\n",
                "seq",
            ),
            (&[0xff, 0xfe], "UTF-8"),
        ];
        for (note, why) in cases {
            let err = open(note, &vk).expect_err(why);
            assert!(err.0.contains(why), "{why}: {err}");
        }
    }

    proptest::proptest! {
        /// Whatever bytes a checkpoint file holds, opening it answers (never panics), and a
        /// note the key did not sign never opens.
        #[test]
        fn no_bytes_open_unless_signed(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let key = SigningKey::from_bytes(&[7; 32]);
            proptest::prop_assert!(open(&bytes, &key.verifying_key()).is_err());
        }

        /// Changing any one byte of a signed checkpoint makes it fail to open.
        #[test]
        fn any_changed_byte_is_refused(at in 0usize..400, to in proptest::num::u8::ANY) {
            let key = SigningKey::from_bytes(&[7; 32]);
            let mut note = sign(&body(), &key).into_bytes();
            let at = at % note.len();
            proptest::prop_assume!(note[at] != to);
            note[at] = to;
            proptest::prop_assert!(open(&note, &key.verifying_key()).is_err());
        }
    }

    #[test]
    fn keygen_writes_keys_openssl_can_read_and_never_overwrites() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tmp");
        let out = tmp.path().join("checkpoint.key");
        let public = generate_key_pair(&out).expect("keygen");
        let mode = std::fs::metadata(&out).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let signing = load_signing_key(&out).expect("private");
        let verifying = load_verifying_key(&public).expect("public");
        assert_eq!(signing.verifying_key(), verifying);
        assert!(
            std::fs::read_to_string(&public)
                .expect("pub")
                .starts_with("-----BEGIN PUBLIC KEY-----\n")
        );
        assert!(matches!(
            generate_key_pair(&out),
            Err(CheckpointKeyError::Io { .. })
        ));
    }
}
