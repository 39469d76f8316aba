//! Ed25519 keys: the server seal key on disk, and key ids.
//!
//! A key file holds the 32-byte secret seed as lowercase hex and one newline, mode 0600. The seed is
//! zeroized when the key is dropped (ed25519-dalek's `zeroize` feature).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::Error;

/// The server's seal key, which counter-signs every decision statement.
pub struct SealKey {
    signing: SigningKey,
}

impl SealKey {
    /// Makes a fresh key from the operating system's randomness.
    pub fn generate() -> Result<Self, Error> {
        Ok(Self {
            signing: random_signing_key()?,
        })
    }

    /// Wraps an existing signing key (tests, imports).
    pub fn from_signing_key(signing: SigningKey) -> Self {
        Self { signing }
    }

    /// Loads the key at `path`, or makes one and writes it there (0600) when no file exists.
    pub fn load_or_create(path: &Path) -> Result<Self, Error> {
        match fs::metadata(path) {
            Ok(_) => Self::load(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate()?;
                write_new(path, &key.signing)?;
                Ok(key)
            }
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Loads a key file, refusing one that others can read.
    pub fn load(path: &Path) -> Result<Self, Error> {
        Ok(Self {
            signing: load_seed(path)?,
        })
    }

    /// The public half.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// The signing key, for the signature module.
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    /// The key id: see [`key_id`].
    pub fn key_id(&self) -> String {
        key_id(&self.verifying_key())
    }
}

/// The transparency log's key, which signs checkpoints as C2SP signed notes under `name`.
///
/// It is a different key from the seal key: the trust file pins it, and it signs nothing else.
#[derive(Clone)]
pub struct LogKey {
    name: String,
    signing: SigningKey,
}

impl LogKey {
    /// Makes a fresh log key named `name` (the log's origin, e.g. `cloudhelp.example.gov.cn/log`).
    pub fn generate(name: &str) -> Result<Self, Error> {
        Self::from_signing_key(name, random_signing_key()?)
    }

    /// Wraps an existing signing key, checking the name is a valid signed-note key name.
    pub fn from_signing_key(name: &str, signing: SigningKey) -> Result<Self, Error> {
        crate::note::check_key_name(name)?;
        Ok(Self {
            name: name.to_string(),
            signing,
        })
    }

    /// Loads the key at `path`, or makes one and writes it there (0600) when no file exists.
    pub fn load_or_create(path: &Path, name: &str) -> Result<Self, Error> {
        crate::note::check_key_name(name)?;
        match fs::metadata(path) {
            Ok(_) => Self::from_signing_key(name, load_seed(path)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate(name)?;
                write_new(path, &key.signing)?;
                Ok(key)
            }
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// The key name, which is also the origin line of its checkpoints.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The public half.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// The verifier for this key, whose text form (`name+hash+key`) goes into the trust file.
    pub fn verifier(&self) -> crate::note::NoteVerifier {
        crate::note::NoteVerifier::new(&self.name, self.verifying_key())
            .expect("the name was checked when the key was made") // checked in from_signing_key
    }

    /// Signs a note text (see [`crate::note::sign_note`]).
    pub fn sign_note(&self, text: &str) -> Result<String, Error> {
        crate::note::sign_note(text, &self.name, &self.signing)
    }
}

fn random_signing_key() -> Result<SigningKey, Error> {
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut()).map_err(|e| Error::Randomness(e.to_string()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Loads a 0600 key file holding a hex seed.
fn load_seed(path: &Path) -> Result<SigningKey, Error> {
    let meta = fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::KeyFilePermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    let text = Zeroizing::new(fs::read_to_string(path).map_err(|e| Error::io(path, e))?);
    let mut seed = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text.trim(), seed.as_mut()).map_err(|_| Error::MalformedKeyFile {
        path: path.to_path_buf(),
        reason: "expected 64 hex digits (a 32-byte Ed25519 seed)".to_string(),
    })?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Writes a key to a new file with mode 0600; never overwrites an existing file.
fn write_new(path: &Path, signing: &SigningKey) -> Result<(), Error> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let text = Zeroizing::new(format!("{}\n", hex::encode(signing.to_bytes())));
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(path, e))
}

/// A stable, printable key id: `ed25519:` and the first 16 hex digits of SHA-256 of the public key.
pub fn key_id(key: &VerifyingKey) -> String {
    let digest = Sha256::digest(key.as_bytes());
    format!("ed25519:{}", hex::encode(&digest[..8]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_key_is_made_once_with_mode_0600_and_loads_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seal.key");
        let first = SealKey::load_or_create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let second = SealKey::load_or_create(&path).unwrap();
        assert_eq!(first.verifying_key(), second.verifying_key());
    }

    #[test]
    fn log_key_is_made_once_with_mode_0600_and_keeps_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.key");
        let first = LogKey::load_or_create(&path, "cloudhelp.test/log").unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let second = LogKey::load_or_create(&path, "cloudhelp.test/log").unwrap();
        assert_eq!(first.verifier(), second.verifier());
        assert!(
            second
                .verifier()
                .to_string()
                .starts_with("cloudhelp.test/log+")
        );
        assert!(LogKey::load_or_create(&path, "bad name").is_err());
    }

    #[test]
    fn key_file_readable_by_others_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seal.key");
        SealKey::load_or_create(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = SealKey::load(&path)
            .err()
            .expect("a 0644 key must be refused");
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn malformed_key_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seal.key");
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap()
            .write_all(b"not hex\n")
            .unwrap();
        let err = SealKey::load(&path).err().expect("garbage must be refused");
        assert!(err.to_string().contains("seal.key"), "{err}");
    }
}
