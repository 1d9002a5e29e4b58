//! The key CloudTrail digests are signed with: RSA, SHA256withRSA (RSASSA-PKCS1-v1_5 with
//! SHA-256), as CloudTrail signs them; its public half is published through `ListPublicKeys`
//! and the admin API. Loaded from a file, or made on first use (a 2048-bit key takes a moment,
//! so an emulator that never signs never makes one).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine as _;
use md5::{Digest as _, Md5};
use time::OffsetDateTime;

/// `digestSignatureAlgorithm` and `x-amz-meta-signature-algorithm`.
pub(crate) const SIGNATURE_ALGORITHM: &str = "SHA256withRSA";

/// How long a key is published as valid, from when it was made or loaded; one key for the
/// emulator's life (assumption: CloudTrail rotates its keys on a schedule it does not document).
const VALIDITY: time::Duration = time::Duration::days(365);

/// Why the signing key could not be had, or could not sign.
#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    /// The key file could not be read.
    #[error("cannot read the digest signing key {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no RSA private key the emulator can use.
    #[error(
        "{path} is not an RSA private key of 2048 to 8192 bits (PEM or DER, PKCS#8 or PKCS#1): {reason}"
    )]
    Rejected {
        /// The file.
        path: PathBuf,
        /// What aws-lc-rs said.
        reason: String,
    },
    /// Generating a key failed.
    #[error("cannot generate an RSA key")]
    Generate,
    /// Signing failed.
    #[error("cannot sign with the digest key")]
    Sign,
}

/// One RSA key pair and what CloudTrail publishes about it.
#[derive(Debug)]
pub(crate) struct Signer {
    key: RsaKeyPair,
    /// `RSAPublicKey` (PKCS#1), DER: `ListPublicKeys`' `Value`.
    public_der: Vec<u8>,
    /// Hex MD5 of `public_der` (assumption: AWS documents a "hexadecimal encoded
    /// fingerprint"; its sample is 32 hex digits, the size of an MD5).
    fingerprint: String,
    pub(crate) valid_from: OffsetDateTime,
    pub(crate) valid_to: OffsetDateTime,
}

impl Signer {
    fn new(key: RsaKeyPair, now: OffsetDateTime) -> Self {
        let public_der = key.public_key().as_ref().to_vec();
        let fingerprint = hex::encode(Md5::digest(&public_der));
        // Whole seconds: the key's times are published as epoch seconds.
        let valid_from = now.replace_nanosecond(0).unwrap_or(now);
        Signer {
            key,
            public_der,
            fingerprint,
            valid_from,
            valid_to: valid_from + VALIDITY,
        }
    }

    /// A fresh 2048-bit key, valid from `now`.
    pub(crate) fn generate(now: OffsetDateTime) -> Result<Self, SigningKeyError> {
        let key = RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| SigningKeyError::Generate)?;
        Ok(Signer::new(key, now))
    }

    /// A key from a file: PEM (`PRIVATE KEY` or `RSA PRIVATE KEY`) or DER (PKCS#8 or PKCS#1).
    pub(crate) fn load(path: &Path, now: OffsetDateTime) -> Result<Self, SigningKeyError> {
        let bytes = std::fs::read(path).map_err(|source| SigningKeyError::Read {
            path: path.to_owned(),
            source,
        })?;
        let rejected = |reason: String| SigningKeyError::Rejected {
            path: path.to_owned(),
            reason,
        };
        let der = match std::str::from_utf8(&bytes) {
            Ok(text) if text.contains("-----BEGIN") => pem_body(text).map_err(rejected)?,
            _ => bytes,
        };
        let key = RsaKeyPair::from_pkcs8(&der)
            .or_else(|_| RsaKeyPair::from_der(&der))
            .map_err(|e| rejected(e.to_string()))?;
        Ok(Signer::new(key, now))
    }

    pub(crate) fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The public key, DER PKCS#1, in base64: a JSON blob as `ListPublicKeys` answers it.
    pub(crate) fn public_key_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.public_der)
    }

    /// SHA256withRSA over `data`, hex encoded (as `x-amz-meta-signature` carries it).
    pub(crate) fn sign_hex(&self, data: &[u8]) -> Result<String, SigningKeyError> {
        let mut signature = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                data,
                &mut signature,
            )
            .map_err(|_| SigningKeyError::Sign)?;
        Ok(hex::encode(signature))
    }
}

/// The base64 between a PEM file's first BEGIN and END lines, decoded.
fn pem_body(text: &str) -> Result<Vec<u8>, String> {
    let body: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .map(str::trim)
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|e| format!("bad PEM base64: {e}"))
}

/// The emulator's one signing key: from the configured file, or generated on first use.
#[derive(Debug)]
pub(crate) struct SigningKey {
    key: Mutex<Option<Arc<Signer>>>,
}

impl SigningKey {
    /// Loads the key file now (so a bad one stops the start), or defers generation.
    pub(crate) fn new(path: Option<&Path>, now: OffsetDateTime) -> Result<Self, SigningKeyError> {
        let key = path.map(|p| Signer::load(p, now)).transpose()?;
        Ok(SigningKey {
            key: Mutex::new(key.map(Arc::new)),
        })
    }

    /// The key, made now (valid from `now`) when there is none yet.
    pub(crate) fn get(&self, now: OffsetDateTime) -> Result<Arc<Signer>, SigningKeyError> {
        let mut key = self.key.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(k) = &*key {
            return Ok(k.clone());
        }
        let made = Arc::new(Signer::generate(now)?);
        *key = Some(made.clone());
        Ok(made)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};

    #[test]
    fn a_signature_verifies_with_the_published_pkcs1_key_and_the_fingerprint_is_its_md5() {
        let now = OffsetDateTime::now_utc();
        let signer = Signer::generate(now).unwrap();
        let sig = hex::decode(signer.sign_hex(b"data to sign").unwrap()).unwrap();
        let der = base64::engine::general_purpose::STANDARD
            .decode(signer.public_key_base64())
            .unwrap();
        let public = UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &der);
        assert!(public.verify(b"data to sign", &sig).is_ok());
        assert!(public.verify(b"other data", &sig).is_err());
        assert_eq!(signer.fingerprint(), hex::encode(Md5::digest(&der)));
        assert_eq!(signer.fingerprint().len(), 32);
        assert_eq!(signer.valid_to - signer.valid_from, VALIDITY);
    }

    #[test]
    fn a_key_file_in_pem_or_der_is_loaded_and_junk_is_refused() {
        use aws_lc_rs::encoding::AsDer as _;
        let now = OffsetDateTime::now_utc();
        let generated = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let pkcs8 = generated.as_der().unwrap();
        let dir = std::env::temp_dir().join(format!("emulator-key-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let der_path = dir.join("key.der");
        std::fs::write(&der_path, pkcs8.as_ref()).unwrap();
        let pem_path = dir.join("key.pem");
        let b64 = base64::engine::general_purpose::STANDARD.encode(pkcs8.as_ref());
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        std::fs::write(
            &pem_path,
            format!(
                "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
                lines.join("\n")
            ),
        )
        .unwrap();
        let from_der = Signer::load(&der_path, now).unwrap();
        let from_pem = Signer::load(&pem_path, now).unwrap();
        assert_eq!(from_der.fingerprint(), from_pem.fingerprint());
        let junk = dir.join("junk");
        std::fs::write(&junk, b"not a key").unwrap();
        assert!(matches!(
            Signer::load(&junk, now),
            Err(SigningKeyError::Rejected { .. })
        ));
        assert!(matches!(
            Signer::load(&dir.join("absent"), now),
            Err(SigningKeyError::Read { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
