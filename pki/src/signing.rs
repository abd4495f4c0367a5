//! Checkpoint signing: an Ed25519 key that the coordinator signs every manifest with, and
//! the trusted public keys that verifiers (`fedra checkpoint verify|pull`, inference nodes)
//! check signatures against.
//!
//! Files:
//! - `checkpoint-signing.key`: the private key, PKCS#8 PEM, mode 0600. Created by
//!   `fedra pki init` (into the CA directory, copied into a coordinator's identity directory
//!   by `fedra pki issue --role coordinator`) or by `fedra-coordinator keygen`.
//! - `checkpoint-signing.pub`: the trust bundle's public half, one `ed25519 <hex>` line per
//!   trusted key (several during a rotation), `#` comments allowed. `fedra pki issue`
//!   copies it into every identity directory beside `ca.pem`.
//! - `manifest.sig` beside each `manifest.json`: [`ManifestSignature`] as JSON. The
//!   signature covers the manifest's exact bytes; the manifest carries the sha256 of the
//!   weights file, so one signature binds the pair.

use crate::{PkiError, files};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use rustls::pki_types::pem::PemObject as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;

/// The private key's file name in a CA or identity directory.
pub const SIGNING_KEY_FILE: &str = "checkpoint-signing.key";
/// The trusted public keys' file name in a CA or identity directory.
pub const TRUST_FILE: &str = "checkpoint-signing.pub";
/// The detached signature's file name beside `manifest.json`.
pub const SIGNATURE_FILE: &str = "manifest.sig";
/// Signature format identifier; bump when fields change meaning.
pub const SIGNATURE_FORMAT: &str = "fedra.signature.v1";

/// A signature did not verify, or a key or signature could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature is not valid JSON of format {SIGNATURE_FORMAT}: {0}")]
    Malformed(String),
    #[error("signed by key {0}, which is not in the trusted keys")]
    UnknownKey(String),
    #[error("the signature by key {0} does not match the manifest's bytes")]
    Mismatch(String),
}

/// The detached signature of one manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestSignature {
    pub format: String,
    pub algorithm: String,
    /// [`key_id`] of the public key that verifies it.
    pub key_id: String,
    /// The 64-byte Ed25519 signature, hex.
    pub signature: String,
}

/// The first 16 hex digits of the sha256 of a raw public key: names a key in signatures,
/// trust files and error messages.
pub fn key_id(public: &[u8]) -> String {
    hex::encode(&Sha256::digest(public)[..8])
}

/// The coordinator's signing key.
pub struct ManifestSigner {
    pair: Ed25519KeyPair,
    key_id: String,
}

impl std::fmt::Debug for ManifestSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManifestSigner").field("key_id", &self.key_id).finish_non_exhaustive()
    }
}

impl ManifestSigner {
    /// A fresh key, in memory (tests, and [`ManifestSigner::create`]).
    pub fn generate() -> Result<(Self, String), PkiError> {
        let pem = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?.serialize_pem();
        Ok((Self::from_pem(&pem, "<generated>")?, pem))
    }

    /// Parses a PKCS#8 PEM Ed25519 private key; `origin` names it in errors.
    pub fn from_pem(pem: &str, origin: &str) -> Result<Self, PkiError> {
        let bad = |reason: String| PkiError::Pem { path: origin.to_string(), reason };
        let der = rustls::pki_types::PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| bad(format!("no PKCS#8 private key: {e}")))?;
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.secret_pkcs8_der())
            .map_err(|e| bad(format!("not an Ed25519 key: {e}")))?;
        let key_id = key_id(pair.public_key().as_ref());
        Ok(Self { pair, key_id })
    }

    /// Reads the private key at `path`.
    pub fn load(path: &Path) -> Result<Self, PkiError> {
        Self::from_pem(&files::read_text(path)?, &path.display().to_string())
    }

    /// Creates a key at `key_path` (mode 0600) and its trust line at `pub_path`, refusing
    /// to overwrite an existing key: a replaced key would orphan every signature made.
    pub fn create(key_path: &Path, pub_path: &Path) -> Result<Self, PkiError> {
        if key_path.exists() {
            return Err(PkiError::Invalid(format!("{} exists; refusing to replace a signing key", key_path.display())));
        }
        let (signer, pem) = Self::generate()?;
        files::write_secret(key_path, &pem)?;
        files::write_public(pub_path, &signer.trust_line())?;
        Ok(signer)
    }

    /// Loads the key at `key_path`, creating it (and `pub_path`) first when absent.
    pub fn load_or_create(key_path: &Path, pub_path: &Path) -> Result<Self, PkiError> {
        if key_path.exists() { Self::load(key_path) } else { Self::create(key_path, pub_path) }
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The `checkpoint-signing.pub` line that trusts this key.
    pub fn trust_line(&self) -> String {
        format!(
            "# fedra checkpoint signing key {}\ned25519 {}\n",
            self.key_id,
            hex::encode(self.pair.public_key().as_ref())
        )
    }

    /// Signs a manifest's exact bytes.
    pub fn sign(&self, manifest: &[u8]) -> ManifestSignature {
        ManifestSignature {
            format: SIGNATURE_FORMAT.into(),
            algorithm: "ed25519".into(),
            key_id: self.key_id.clone(),
            signature: hex::encode(self.pair.sign(manifest).as_ref()),
        }
    }

    /// [`ManifestSigner::sign`] as the JSON written to `manifest.sig`.
    pub fn sign_json(&self, manifest: &[u8]) -> String {
        serde_json::to_string_pretty(&self.sign(manifest)).expect("a signature serialises")
    }
}

/// The public keys a verifier trusts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedKeys {
    keys: Vec<(String, Vec<u8>)>,
}

impl TrustedKeys {
    /// Parses a trust file: `ed25519 <64 hex digits>` per line, blank lines and `#`
    /// comments ignored; at least one key.
    pub fn parse(text: &str, origin: &str) -> Result<Self, PkiError> {
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |reason: &str| PkiError::Pem { path: format!("{origin}:{}", n + 1), reason: reason.into() };
            let (alg, key) = line.split_once(char::is_whitespace).ok_or_else(|| bad("expected `ed25519 <hex>`"))?;
            if alg != "ed25519" {
                return Err(bad("only ed25519 keys are supported"));
            }
            let raw = hex::decode(key.trim()).map_err(|_| bad("the key is not hex"))?;
            if raw.len() != 32 {
                return Err(bad("an Ed25519 public key is 32 bytes"));
            }
            keys.push((key_id(&raw), raw));
        }
        if keys.is_empty() {
            return Err(PkiError::Pem { path: origin.into(), reason: "no `ed25519 <hex>` key line".into() });
        }
        Ok(Self { keys })
    }

    pub fn load(path: &Path) -> Result<Self, PkiError> {
        Self::parse(&files::read_text(path)?, &path.display().to_string())
    }

    /// Trusts exactly `signer`'s public key (tests, in-process wiring).
    pub fn of(signer: &ManifestSigner) -> Self {
        Self { keys: vec![(signer.key_id.clone(), signer.pair.public_key().as_ref().to_vec())] }
    }

    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(id, _)| id.as_str())
    }

    /// Checks `signature_json` (a `manifest.sig`) over `manifest`'s exact bytes.
    ///
    /// # Errors
    /// [`SignatureError`] naming the key or what was malformed.
    pub fn verify(&self, manifest: &[u8], signature_json: &[u8]) -> Result<String, SignatureError> {
        let sig: ManifestSignature =
            serde_json::from_slice(signature_json).map_err(|e| SignatureError::Malformed(e.to_string()))?;
        if sig.format != SIGNATURE_FORMAT || sig.algorithm != "ed25519" {
            return Err(SignatureError::Malformed(format!("format {} algorithm {}", sig.format, sig.algorithm)));
        }
        let raw = hex::decode(&sig.signature).map_err(|_| SignatureError::Malformed("signature is not hex".into()))?;
        let (_, public) = self
            .keys
            .iter()
            .find(|(id, _)| *id == sig.key_id)
            .ok_or_else(|| SignatureError::UnknownKey(sig.key_id.clone()))?;
        UnparsedPublicKey::new(&ED25519, public)
            .verify(manifest, &raw)
            .map_err(|_| SignatureError::Mismatch(sig.key_id.clone()))?;
        Ok(sig.key_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_over_the_same_bytes_and_a_trusted_key() {
        let (signer, _) = ManifestSigner::generate().unwrap();
        let trust = TrustedKeys::parse(&signer.trust_line(), "t").unwrap();
        assert_eq!(trust, TrustedKeys::of(&signer));
        let sig = signer.sign_json(b"{\"a\":1}");
        assert_eq!(trust.verify(b"{\"a\":1}", sig.as_bytes()).unwrap(), signer.key_id());
        assert_eq!(
            trust.verify(b"{\"a\":2}", sig.as_bytes()),
            Err(SignatureError::Mismatch(signer.key_id().to_string()))
        );
        let (other, _) = ManifestSigner::generate().unwrap();
        assert!(matches!(
            TrustedKeys::of(&other).verify(b"{\"a\":1}", sig.as_bytes()),
            Err(SignatureError::UnknownKey(_))
        ));
        assert!(matches!(trust.verify(b"{}", b"not json"), Err(SignatureError::Malformed(_))));
    }

    #[test]
    fn keys_round_trip_through_files_and_are_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let (key, public) = (dir.path().join(SIGNING_KEY_FILE), dir.path().join(TRUST_FILE));
        let created = ManifestSigner::load_or_create(&key, &public).unwrap();
        let loaded = ManifestSigner::load_or_create(&key, &public).unwrap();
        assert_eq!(created.key_id(), loaded.key_id());
        assert!(ManifestSigner::create(&key, &public).is_err());
        let trust = TrustedKeys::load(&public).unwrap();
        assert!(trust.verify(b"m", loaded.sign_json(b"m").as_bytes()).is_ok());
    }

    #[test]
    fn trust_files_name_the_bad_line() {
        let err = TrustedKeys::parse("# c\ned25519 zz\n", "keys.pub").unwrap_err().to_string();
        assert!(err.contains("keys.pub:2"), "{err}");
        assert!(TrustedKeys::parse("# only comments\n", "k").is_err());
        assert!(TrustedKeys::parse(&format!("rsa {}", "00".repeat(32)), "k").is_err());
    }
}
