//! The certificate of Core's `tls` section, which RTMPS serves. It is read and checked whenever
//! the configuration loads, so a missing or bad file is a configuration error (the start is
//! refused, a `PUT /api/v3/config` answers 409), never a panic. Paths that came in through the
//! config API must lie inside the data directory: no request may make the server read other
//! files. Errors name the key and the path, never what the file contains.

use std::io::Read;
use std::path::{Component, Path};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{Config, TlsConfig};

/// The keys holding file paths; set through the API they are confined by [`confine`].
pub const PATH_KEYS: [&str; 2] = ["tls.cert_file", "tls.key_file"];

/// A certificate chain or key is a few KiB; this bounds what a wrong path makes us read.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// Checks the certificate of `config` when TLS is on, so that a bad one is reported on load.
pub fn check(config: &Config) -> anyhow::Result<()> {
    if config.tls.enable {
        server_config(&config.tls)?;
    }
    Ok(())
}

/// The rustls server configuration of `tls`'s certificate chain and key.
pub fn server_config(tls: &TlsConfig) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let (cert_key, cert_path) = (PATH_KEYS[0], tls.cert_file.as_str());
    let (key_key, key_path) = (PATH_KEYS[1], tls.key_file.as_str());
    let chain = CertificateDer::pem_slice_iter(&read(cert_key, cert_path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(cert_key, cert_path, e))?;
    if chain.is_empty() {
        bail!("{cert_key} {cert_path}: no CERTIFICATE block in it");
    }
    let key = PrivateKeyDer::from_pem_slice(&read(key_key, key_path)?)
        .map_err(|e| pem_error(key_key, key_path, e))?;
    // ring, named here rather than taken from the process default, which depends on the
    // features other crates turn on.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        // Parses the key and checks that it belongs to the chain's first certificate.
        .with_single_cert(chain, key)
        .map_err(|e| {
            let why = match e {
                rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                    "the key does not belong to the certificate".to_string()
                }
                e => e.to_string(),
            };
            anyhow!("{cert_key} {cert_path} with {key_key} {key_path}: {why}")
        })?;
    Ok(Arc::new(config))
}

/// A regular file of at most [`MAX_FILE_BYTES`].
fn read(key: &str, path: &str) -> anyhow::Result<Vec<u8>> {
    let meta = std::fs::metadata(path).with_context(|| format!("{key} {path}: cannot read it"))?;
    if !meta.is_file() {
        bail!("{key} {path}: not a regular file");
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
        .with_context(|| format!("{key} {path}: cannot read it"))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        bail!("{key} {path}: larger than {MAX_FILE_BYTES} bytes, not a PEM certificate or key");
    }
    Ok(bytes)
}

/// Our own words: some of the parser's messages quote a line of the file.
fn pem_error(key: &str, path: &str, e: pem::Error) -> anyhow::Error {
    let why = match e {
        pem::Error::NoItemsFound => "no PEM block of the expected kind in it",
        pem::Error::MissingSectionEnd { .. } => "a PEM block without its END line",
        pem::Error::IllegalSectionStart { .. } => "a malformed PEM BEGIN line",
        pem::Error::Base64Decode(_) => "a PEM block that is not valid base64",
        _ => "not a valid PEM file",
    };
    anyhow!("{key} {path}: {why}")
}

/// `path` as the config API set it: a relative path is taken from `data_dir`, and the file
/// (symbolic links resolved) must be inside `data_dir`. Returns the path to open.
pub fn confine(key: &str, path: &str, data_dir: &Path) -> anyhow::Result<String> {
    if path.is_empty() {
        return Ok(String::new());
    }
    let outside = || {
        anyhow!("{key} {path}: set through the API, it must name a file inside the data directory")
    };
    let given = Path::new(path);
    let plain = |p: &Path| {
        p.components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    };
    // Decided on the names first, so nothing outside the data directory is even looked up.
    let joined = if given.is_absolute() {
        let absolute_dir = std::path::absolute(data_dir).map_err(|_| outside())?;
        let inside = [data_dir, absolute_dir.as_path()]
            .iter()
            .any(|dir| given.strip_prefix(dir).is_ok_and(plain));
        if !inside {
            return Err(outside());
        }
        given.to_path_buf()
    } else if plain(given) {
        data_dir.join(given)
    } else {
        return Err(outside());
    };
    let real_dir = data_dir
        .canonicalize()
        .with_context(|| format!("{key} {path}: the data directory cannot be resolved"))?;
    let real = joined
        .canonicalize()
        .with_context(|| format!("{key} {path}: cannot read it"))?;
    if !real.starts_with(&real_dir) {
        return Err(outside());
    }
    joined
        .to_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("{key} {path}: the data directory's path is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_paths_stay_in_the_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("cert.pem"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", data.join("link.pem")).unwrap();
        let key = "tls.cert_file";
        let inside = data.join("cert.pem");
        assert_eq!(
            confine(key, "cert.pem", &data).unwrap(),
            inside.to_str().unwrap()
        );
        assert!(confine(key, inside.to_str().unwrap(), &data).is_ok());
        for bad in ["/etc/passwd", "../cert.pem", "link.pem", "x/../../cert.pem"] {
            let e = confine(key, bad, &data).unwrap_err().to_string();
            assert!(e.contains("inside the data directory"), "{bad}: {e}");
        }
        assert!(confine(key, "missing.pem", &data).is_err());
        assert_eq!(confine(key, "", &data).unwrap(), "");
    }

    #[test]
    fn bad_files_are_errors_without_their_contents() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "-----BEGIN TOP SECRET\nhunter2\n").unwrap();
        let path = secret.to_str().unwrap().to_string();
        let tls = TlsConfig {
            enable: true,
            cert_file: path.clone(),
            key_file: path,
            ..TlsConfig::default()
        };
        let e = format!("{:#}", server_config(&tls).unwrap_err());
        assert!(e.starts_with("tls.cert_file"), "{e}");
        assert!(!e.contains("hunter2") && !e.contains("TOP SECRET"), "{e}");
        let dir_as_file = TlsConfig {
            cert_file: dir.path().to_str().unwrap().into(),
            ..tls
        };
        let e = format!("{:#}", server_config(&dir_as_file).unwrap_err());
        assert!(e.contains("not a regular file"), "{e}");
    }
}
