//! Ed25519 keys and signatures for updates. A secret key file holds the base64 32-byte seed
//! (written mode 0600); a public key is the base64 32-byte key, as the config lists it.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("not a base64 ed25519 public key (32 bytes): {0}")]
    PublicKey(String),
    #[error("{path}: not an edge-agent secret key (base64 of 32 bytes)")]
    SecretKey { path: std::path::PathBuf },
    #[error("signature is not base64 of 64 bytes")]
    Encoding,
    #[error("signature does not verify against any trusted key")]
    Untrusted,
    #[error("{path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error("no randomness from the operating system: {0}")]
    Random(String),
}

pub fn public_key(b64: &str) -> Result<VerifyingKey, SignError> {
    let bytes = B64.decode(b64.trim()).map_err(|e| SignError::PublicKey(e.to_string()))?;
    let arr: [u8; 32] = bytes.try_into().map_err(|_| SignError::PublicKey("wrong length".into()))?;
    VerifyingKey::from_bytes(&arr).map_err(|e| SignError::PublicKey(e.to_string()))
}

pub fn encode_public(key: &VerifyingKey) -> String {
    B64.encode(key.as_bytes())
}

/// A new key pair from the OS's randomness.
pub fn generate() -> Result<SigningKey, SignError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| SignError::Random(e.to_string()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Writes `<stem>.secret` (0600) and `<stem>.pub`; refuses to overwrite a secret.
pub fn write_pair(key: &SigningKey, stem: &Path) -> Result<(std::path::PathBuf, std::path::PathBuf), SignError> {
    use std::io::Write;
    let secret = stem.with_extension("secret");
    let public = stem.with_extension("pub");
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SignError::Io { path, source }
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(&secret).map_err(io(&secret))?;
    f.write_all(format!("{}\n", B64.encode(key.to_bytes())).as_bytes()).map_err(io(&secret))?;
    std::fs::write(&public, format!("{}\n", encode_public(&key.verifying_key()))).map_err(io(&public))?;
    Ok((secret, public))
}

pub fn read_secret(path: &Path) -> Result<SigningKey, SignError> {
    let text = std::fs::read_to_string(path).map_err(|source| SignError::Io { path: path.to_path_buf(), source })?;
    let bytes = B64.decode(text.trim()).map_err(|_| SignError::SecretKey { path: path.to_path_buf() })?;
    let seed: [u8; 32] = bytes.try_into().map_err(|_| SignError::SecretKey { path: path.to_path_buf() })?;
    Ok(SigningKey::from_bytes(&seed))
}

/// The device's own key, `<state_dir>/device.secret` (the seed, mode 0600), made on first use
/// with `device.pub` beside it. It signs the update statuses; `edge-agent device-key` prints
/// the public half for `push --device-key`.
pub fn device_key(state_dir: &Path) -> Result<SigningKey, SignError> {
    let secret = state_dir.join("device.secret");
    match read_secret(&secret) {
        Ok(key) => return Ok(key),
        Err(SignError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(state_dir).map_err(|source| SignError::Io { path: state_dir.to_path_buf(), source })?;
    let key = generate()?;
    match write_pair(&key, &state_dir.join("device")) {
        Ok(_) => {
            // the key must survive a power cut once statuses signed with it have left
            for path in [secret.as_path(), state_dir] {
                std::fs::File::open(path)
                    .and_then(|f| f.sync_all())
                    .map_err(|source| SignError::Io { path: path.to_path_buf(), source })?;
            }
            Ok(key)
        }
        // another process made it first: use theirs
        Err(SignError::Io { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists => read_secret(&secret),
        Err(e) => Err(e),
    }
}

/// Base64 signature of `message`.
pub fn sign(key: &SigningKey, message: &[u8]) -> String {
    B64.encode(key.sign(message).to_bytes())
}

/// Which trusted key (its index) signed `message`; strict verification (no malleability).
pub fn verify(trusted: &[VerifyingKey], message: &[u8], signature_b64: &str) -> Result<usize, SignError> {
    let bytes = B64.decode(signature_b64.trim()).map_err(|_| SignError::Encoding)?;
    let arr: [u8; 64] = bytes.try_into().map_err(|_| SignError::Encoding)?;
    let sig = Signature::from_bytes(&arr);
    trusted
        .iter()
        .position(|k| k.verify_strict(message, &sig).is_ok() && k.verify(message, &sig).is_ok())
        .ok_or(SignError::Untrusted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_reject() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        let trusted = [b.verifying_key(), a.verifying_key()];
        let sig = sign(&a, b"manifest");
        assert_eq!(verify(&trusted, b"manifest", &sig).unwrap(), 1);
        assert!(matches!(verify(&trusted, b"manifest!", &sig), Err(SignError::Untrusted)));
        assert!(matches!(verify(&trusted[..1], b"manifest", &sig), Err(SignError::Untrusted)));
        assert!(matches!(verify(&trusted, b"manifest", "not base64!"), Err(SignError::Encoding)));
        assert!(public_key(&encode_public(&a.verifying_key())).is_ok());
        assert!(public_key("AAAA").is_err());
    }

    #[test]
    fn the_device_key_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let first = device_key(&state).unwrap();
        assert_eq!(device_key(&state).unwrap().to_bytes(), first.to_bytes(), "read back, not made again");
        let public = std::fs::read_to_string(state.join("device.pub")).unwrap();
        assert_eq!(public.trim(), encode_public(&first.verifying_key()));
        std::fs::write(state.join("device.secret"), "garbage").unwrap();
        assert!(
            matches!(device_key(&state), Err(SignError::SecretKey { .. })),
            "a damaged key is an error, not replaced"
        );
    }

    #[test]
    fn key_files_round_trip_and_secret_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let key = generate().unwrap();
        let (secret, _) = write_pair(&key, &dir.path().join("k")).unwrap();
        assert_eq!(read_secret(&secret).unwrap().to_bytes(), key.to_bytes());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert!(write_pair(&key, &dir.path().join("k")).is_err(), "no overwrite");
    }
}
