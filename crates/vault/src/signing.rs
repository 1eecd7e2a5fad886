//! Time-limited download links: HMAC-SHA256 over the chunk id and the expiry time.

use hmac::{Hmac, Mac};
use osprey_core::error::ResultExt;
use osprey_core::{Clock, Error, ErrorKind, Result};
use sha2::Sha256;
use std::path::Path;
use std::sync::Arc;

const MIN_KEY_BYTES: usize = 32;

#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
    base_url: String,
    clock: Arc<dyn Clock>,
}

impl Signer {
    pub fn new(key: Vec<u8>, base_url: String, clock: Arc<dyn Clock>) -> Result<Self> {
        if key.len() < MIN_KEY_BYTES {
            return Err(Error::invalid(format!("signing key must be at least {MIN_KEY_BYTES} bytes")));
        }
        Ok(Signer { key, base_url, clock })
    }

    fn mac(&self, chunk_id: &str, expires: i64) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("hmac takes any key length");
        mac.update(chunk_id.as_bytes());
        mac.update(b"\n");
        mac.update(expires.to_string().as_bytes());
        mac
    }

    /// A keyed fingerprint of `parts` (HMAC-SHA256 with the signing key, hex): what a session
    /// keeps of the keys it was made with, from which the keys cannot be recovered or guessed
    /// offline.
    pub fn fingerprint(&self, parts: &[&str]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("hmac takes any key length");
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part.as_bytes());
        }
        hex::encode(mac.finalize().into_bytes())
    }

    /// A download URL valid for `ttl_secs`, and its expiry (unix seconds).
    pub fn url(&self, chunk_id: &str, ttl_secs: u64) -> (String, i64) {
        let expires = self.clock.unix_secs() + ttl_secs as i64;
        let signature = hex::encode(self.mac(chunk_id, expires).finalize().into_bytes());
        let url = format!("{}/api/v1/download/{chunk_id}?expires={expires}&signature={signature}", self.base_url);
        (url, expires)
    }

    pub fn verify(&self, chunk_id: &str, expires: i64, signature: &str) -> Result<()> {
        let bad = || Error::new(ErrorKind::PermissionDenied, "invalid download signature");
        let signature = hex::decode(signature).map_err(|_| bad())?;
        self.mac(chunk_id, expires).verify_slice(&signature).map_err(|_| bad())?;
        if self.clock.unix_secs() > expires {
            return Err(Error::new(ErrorKind::PermissionDenied, "download link has expired"));
        }
        Ok(())
    }
}

/// The configured hex key, or the one kept in `<data_dir>/signing.key`, made on first start.
pub fn load_key(configured: Option<&str>, data_dir: &Path) -> Result<Vec<u8>> {
    if let Some(hex_key) = configured {
        return hex::decode(hex_key.trim())
            .map_err(|_| Error::invalid("invalid config: vault.signing_key must be hex"));
    }
    let path = data_dir.join("signing.key");
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .kind_ctx(ErrorKind::Unavailable, || format!("cannot read {}", path.display()))?;
        return hex::decode(text.trim()).map_err(|_| Error::invalid(format!("{} is not hex", path.display())));
    }
    let key: [u8; 32] = rand::random();
    std::fs::create_dir_all(data_dir)
        .kind_ctx(ErrorKind::Unavailable, || format!("cannot create {}", data_dir.display()))?;
    write_private(&path, &hex::encode(key))?;
    Ok(key.to_vec())
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file =
        options.open(path).kind_ctx(ErrorKind::Unavailable, || format!("cannot create {}", path.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|_| file.sync_all())
        .kind_ctx(ErrorKind::Unavailable, || format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use osprey_core::ManualClock;
    use std::time::{Duration, UNIX_EPOCH};

    fn signer(clock: Arc<ManualClock>) -> Signer {
        Signer::new(vec![7; 32], "http://v".into(), clock).unwrap()
    }

    fn query(url: &str, name: &str) -> String {
        url.split(&format!("{name}=")).nth(1).unwrap().split('&').next().unwrap().to_string()
    }

    #[test]
    fn signs_verifies_and_expires() {
        let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(1_000)));
        let s = signer(clock.clone());
        let (url, expires) = s.url("abc", 60);
        assert_eq!(expires, 1_060);
        let sig = query(&url, "signature");
        s.verify("abc", expires, &sig).unwrap();
        assert!(s.verify("abd", expires, &sig).is_err(), "other chunk");
        assert!(s.verify("abc", expires + 1, &sig).is_err(), "other expiry");
        clock.advance(Duration::from_secs(61));
        let err = s.verify("abc", expires, &sig).unwrap_err();
        assert!(err.to_string().contains("expired"), "{err}");
    }

    #[test]
    fn short_keys_are_refused() {
        let clock = Arc::new(ManualClock::new(UNIX_EPOCH));
        assert!(Signer::new(vec![1; 16], "http://v".into(), clock).is_err());
    }
}
