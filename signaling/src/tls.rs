//! TLS: a real certificate from the configuration, or a self-signed one made at first start and
//! kept in the data folder (key 0600), so browsers can pin an exception once.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::error::{Error, Result};

/// Where the certificate and key are.
#[derive(Debug, Clone)]
pub struct CertPaths {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// Whether the server made it itself.
    pub self_signed: bool,
}

/// The configured certificate, or the kept self-signed one (made now if missing).
pub fn certificate(config: &Config) -> Result<CertPaths> {
    if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
        for (name, path) in [("tls_cert", cert), ("tls_key", key)] {
            if !path.is_file() {
                return Err(Error::Internal(format!(
                    "{name}: {} is not a readable file",
                    path.display()
                )));
            }
        }
        return Ok(CertPaths {
            cert: cert.clone(),
            key: key.clone(),
            self_signed: false,
        });
    }
    let folder = config.data_dir.join("tls");
    let paths = CertPaths {
        cert: folder.join("cert.pem"),
        key: folder.join("key.pem"),
        self_signed: true,
    };
    if !paths.cert.exists() || !paths.key.exists() {
        std::fs::create_dir_all(&folder)?;
        make_self_signed(&paths, config.listen)?;
    }
    Ok(paths)
}

fn make_self_signed(paths: &CertPaths, listen: SocketAddr) -> Result<()> {
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if !listen.ip().is_unspecified() && !listen.ip().is_loopback() {
        names.push(listen.ip().to_string());
    }
    let certified = rcgen::generate_simple_self_signed(names)
        .map_err(|e| Error::Internal(format!("certificate: {e}")))?;
    write_file(
        &paths.key,
        certified.signing_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    write_file(&paths.cert, certified.cert.pem().as_bytes(), 0o644)?;
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(())
}
