//! Identities: ed25519 keys, their ids, and key files.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;

/// An account id: the hex of an ed25519 public key (64 characters). The
/// point is decompressed and checked once, when the id is parsed.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyId(String, VerifyingKey);

/// On the wire a key id is its hex string.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for KeyId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        <String as utoipa::PartialSchema>::schema()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for KeyId {}

impl PartialEq for KeyId {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for KeyId {}

impl std::hash::Hash for KeyId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl PartialOrd for KeyId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for KeyId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.cmp(&other.0)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("a key id is 64 hex characters (an ed25519 public key)")]
    BadKeyId,
    #[error("the public key is not a valid ed25519 point")]
    BadPoint,
    #[error("the public key is a weak (small-order) point: it cannot be an account")]
    WeakKey,
    #[error("a signature is 128 hex characters")]
    BadSignatureEncoding,
    #[error("the signature does not verify")]
    BadSignature,
}

impl KeyId {
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let bytes: [u8; 32] = hex::decode(text)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(KeyError::BadKeyId)?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::BadPoint)?;
        if key.is_weak() {
            return Err(KeyError::WeakKey);
        }
        Ok(KeyId(text.to_ascii_lowercase(), key))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.1
    }

    /// Check `signature` (hex) over `message` with `verify_strict`, which
    /// refuses non-canonical (malleable) signatures; weak keys never parse.
    pub fn verify(&self, message: &[u8], signature: &str) -> Result<(), KeyError> {
        let mut bytes = [0u8; 64];
        hex::decode_to_slice(signature, &mut bytes).map_err(|_| KeyError::BadSignatureEncoding)?;
        self.1
            .verify_strict(message, &Signature::from_bytes(&bytes))
            .map_err(|_| KeyError::BadSignature)
    }
}

impl TryFrom<String> for KeyId {
    type Error = KeyError;
    fn try_from(s: String) -> Result<Self, KeyError> {
        KeyId::parse(&s)
    }
}

impl From<KeyId> for String {
    fn from(k: KeyId) -> String {
        k.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A signing key and its id.
pub struct Keypair {
    signing: SigningKey,
    id: KeyId,
}

/// The JSON of a key file (written 0600).
#[derive(Serialize, Deserialize)]
struct KeyFile {
    /// The 32-byte ed25519 secret, hex.
    secret: String,
    /// The public key (account id), hex; checked against the secret.
    public: String,
}

impl Keypair {
    /// A new key from the operating system's randomness.
    pub fn generate() -> Self {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).expect("the OS provides randomness");
        Self::from_secret(secret)
    }

    pub fn from_secret(secret: [u8; 32]) -> Self {
        let signing = SigningKey::from_bytes(&secret);
        let id = KeyId(
            hex::encode(signing.verifying_key().as_bytes()),
            signing.verifying_key(),
        );
        Keypair { signing, id }
    }

    pub fn id(&self) -> &KeyId {
        &self.id
    }

    /// Sign `message`; hex.
    pub fn sign(&self, message: &[u8]) -> String {
        hex::encode(self.signing.sign(message).to_bytes())
    }

    /// The key file's contents.
    pub fn to_file_json(&self) -> String {
        serde_json::to_string_pretty(&KeyFile {
            secret: hex::encode(self.signing.to_bytes()),
            public: self.id.0.clone(),
        })
        .expect("plain JSON")
    }

    pub fn from_file_json(text: &str) -> Result<Self, String> {
        let file: KeyFile =
            serde_json::from_str(text).map_err(|e| format!("not an Agora key file: {e}"))?;
        let secret: [u8; 32] = hex::decode(&file.secret)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or("the secret is not 32 hex-encoded bytes")?;
        let key = Keypair::from_secret(secret);
        if key.id.0 != file.public.to_ascii_lowercase() {
            return Err("the public key does not belong to the secret".into());
        }
        Ok(key)
    }

    /// Write a new key file readable by its owner only; refuses to overwrite.
    pub fn write_new(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path)?;
        file.write_all(self.to_file_json().as_bytes())
    }

    pub fn read(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading key file {}: {e}", path.display()))?;
        Self::from_file_json(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify_round_trip() {
        let key = Keypair::generate();
        let sig = key.sign(b"hello");
        assert_eq!(key.id().verify(b"hello", &sig), Ok(()));
        assert_eq!(key.id().verify(b"hellO", &sig), Err(KeyError::BadSignature));
        let other = Keypair::generate();
        assert_eq!(
            other.id().verify(b"hello", &sig),
            Err(KeyError::BadSignature)
        );
    }

    #[test]
    fn key_ids_are_checked() {
        assert_eq!(KeyId::parse("abc"), Err(KeyError::BadKeyId));
        let key = Keypair::generate();
        assert!(KeyId::parse(&key.id().as_str().to_uppercase()).is_ok());
        let back = Keypair::from_file_json(&key.to_file_json()).unwrap();
        assert_eq!(back.id(), key.id());
    }

    #[test]
    fn a_malleated_signature_is_refused() {
        // s + L (the group order) verifies under the lax check but not strict.
        let key = Keypair::generate();
        let mut sig = hex::decode(key.sign(b"m")).unwrap();
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut carry = 0u16;
        for i in 0..32 {
            let v = sig[32 + i] as u16 + L[i] as u16 + carry;
            sig[32 + i] = v as u8;
            carry = v >> 8;
        }
        assert!(key.id().verify(b"m", &hex::encode(sig)).is_err());
    }

    #[test]
    fn a_weak_key_is_refused() {
        // The identity point (small order): a "signature" by it would verify
        // for many messages under a lax check.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(KeyId::parse(&hex::encode(identity)), Err(KeyError::WeakKey));
    }
}
