//! TLS for dbbackup's own connections, with libpq's `sslmode` semantics (rustls with the `ring`
//! provider; see [`crate::source::conn::ConnParams::connect`] for how it is used).
//!
//! | sslmode | TLS | server certificate |
//! |---|---|---|
//! | `disable` | never | – |
//! | `allow`, `prefer` | if the server offers it (plain text if it does not, or if the handshake fails) | chain verified if a root certificate file exists, else not verified |
//! | `require` | mandatory | chain verified if a root certificate file exists, else not verified |
//! | `verify-ca` | mandatory | chain verified against the root certificate file (which must exist); host name not checked |
//! | `verify-full` | mandatory | chain and host name verified |
//!
//! The root certificate file is `PGSSLROOTCERT`, else `~/.postgresql/root.crt`. A client
//! certificate (`PGSSLCERT`/`PGSSLKEY`, else `~/.postgresql/postgresql.crt`/`.key`) is sent when
//! its certificate file exists. Unix-socket connections never use TLS (as in libpq).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

pub use tokio_postgres_rustls::MakeRustlsConnect;

use crate::source::conn::SslMode;

/// The TLS files of a connection, with libpq's defaults applied (existence not checked).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// `PGSSLROOTCERT`, else `~/.postgresql/root.crt`.
    pub root_cert: Option<PathBuf>,
    /// `PGSSLCERT`, else `~/.postgresql/postgresql.crt`.
    pub cert: Option<PathBuf>,
    /// `PGSSLKEY`, else `~/.postgresql/postgresql.key`.
    pub key: Option<PathBuf>,
}

impl TlsFiles {
    /// Applies libpq's defaults under `home` to the values of `PGSSLROOTCERT`, `PGSSLCERT` and
    /// `PGSSLKEY`.
    pub fn resolve(
        root_cert: Option<String>,
        cert: Option<String>,
        key: Option<String>,
        home: Option<&Path>,
    ) -> Self {
        let pick = |v: Option<String>, default: &str| {
            v.map(PathBuf::from)
                .or_else(|| home.map(|h| h.join(".postgresql").join(default)))
        };
        TlsFiles {
            root_cert: pick(root_cert, "root.crt"),
            cert: pick(cert, "postgresql.crt"),
            key: pick(key, "postgresql.key"),
        }
    }
}

/// How the server's certificate is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verify {
    /// Not at all (libpq's `require` without a root certificate file).
    Nothing,
    /// The chain up to a root in the root certificate file, not the host name (`verify-ca`).
    Chain,
    /// Chain and host name (`verify-full`).
    Full,
}

/// A connector for `sslmode` (not `disable`), reading the files now. The error is one
/// sentence naming the file at fault (no prefix: the caller adds host and sslmode).
pub fn connector(mode: SslMode, files: &TlsFiles) -> Result<(MakeRustlsConnect, Verify), String> {
    let root = files.root_cert.as_deref().filter(|p| p.exists());
    let verify = match (mode, root) {
        (SslMode::VerifyFull, Some(_)) => Verify::Full,
        (_, Some(_)) => Verify::Chain,
        (SslMode::VerifyCa | SslMode::VerifyFull, None) => {
            return Err(match &files.root_cert {
                Some(p) => format!(
                    "root certificate file \"{}\" does not exist; provide it (PGSSLROOTCERT) \
                     or use sslmode=require to skip server certificate verification",
                    p.display()
                ),
                None => "no root certificate file (set PGSSLROOTCERT; the home directory is \
                         unknown) or use sslmode=require to skip server certificate verification"
                    .into(),
            });
        }
        (_, None) => Verify::Nothing,
    };
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let builder = match (verify, root) {
        (Verify::Nothing, _) | (_, None) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider.clone()))),
        (Verify::Chain, Some(root)) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki(root, &provider)?))),
        (Verify::Full, Some(root)) => builder.with_webpki_verifier(webpki(root, &provider)?),
    };
    let mut config = match client_identity(files)? {
        Some((certs, key)) => {
            let cert = files.cert.as_deref().unwrap_or(Path::new("")).display();
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("client certificate \"{cert}\": {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    // What libpq >= 17 offers; older servers ignore it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok((MakeRustlsConnect::new(config), verify))
}

/// A connector that verifies nothing, for cancel requests (which carry only the backend's pid
/// and cancel key; libpq < 17 sends them in plain text).
pub fn cancel_connector() -> MakeRustlsConnect {
    static CONNECTOR: OnceLock<MakeRustlsConnect> = OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            let (c, _) = connector(SslMode::Require, &TlsFiles::default())
                .expect("a TLS configuration without files cannot fail");
            c
        })
        .clone()
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The webpki verifier for the roots in `file`.
fn webpki(
    file: &Path,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, String> {
    let what = || format!("root certificate file \"{}\"", file.display());
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(file).map_err(|e| format!("{}: {e}", what()))? {
        let cert = cert.map_err(|e| format!("{}: {e}", what()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: unusable certificate: {e}", what()))?;
    }
    if roots.is_empty() {
        return Err(format!("{} contains no certificates", what()));
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("{}: {e}", what()))
}

type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// The client certificate chain and key, if the certificate file exists (libpq: a certificate
/// without its key is an error; a key without a certificate is ignored).
fn client_identity(files: &TlsFiles) -> Result<Option<Identity>, String> {
    let Some(cert_file) = files.cert.as_deref().filter(|p| p.is_file()) else {
        return Ok(None);
    };
    let cert_what = || format!("client certificate file \"{}\"", cert_file.display());
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", cert_what()))?;
    if certs.is_empty() {
        return Err(format!("{} contains no certificates", cert_what()));
    }
    let key_file = match files.key.as_deref() {
        Some(k) if k.is_file() => k,
        Some(k) => {
            return Err(format!(
                "{} exists, but its private key file \"{}\" does not (PGSSLKEY)",
                cert_what(),
                k.display()
            ))
        }
        None => return Err(format!("{} exists, but PGSSLKEY is not set", cert_what())),
    };
    let key_what = || format!("private key file \"{}\"", key_file.display());
    check_key_permissions(key_file).map_err(|m| format!("{} {m}", key_what()))?;
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| format!("{}: {e} (encrypted keys are not supported)", key_what()))?;
    Ok(Some((certs, key)))
}

/// libpq's rule: at most u=rw (0600) if owned by us, u=rw,g=r (0640) if owned by root.
fn check_key_permissions(file: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(file).map_err(|e| format!(": {e}"))?;
    let mode = meta.mode();
    let ok = if meta.uid() == 0 {
        mode & 0o037 == 0
    } else {
        mode & 0o077 == 0
    };
    if ok {
        Ok(())
    } else {
        Err(
            "has group or world access; permissions should be u=rw (0600) or less \
             (u=rw,g=r (0640) or less if owned by root)"
                .into(),
        )
    }
}

/// `sslmode=require` without a root certificate: any certificate is accepted (the handshake
/// signatures are still checked, so the server holds the key of the certificate it shows).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: webpki's chain verification, but a certificate issued for another name is
/// accepted (webpki checks the name last, after the chain).
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_default_under_home() {
        let f = TlsFiles::resolve(None, Some("/c.crt".into()), None, Some(Path::new("/h")));
        assert_eq!(
            f.root_cert.as_deref(),
            Some(Path::new("/h/.postgresql/root.crt"))
        );
        assert_eq!(f.cert.as_deref(), Some(Path::new("/c.crt")));
        assert_eq!(
            f.key.as_deref(),
            Some(Path::new("/h/.postgresql/postgresql.key"))
        );
        assert_eq!(
            TlsFiles::resolve(None, None, None, None),
            TlsFiles::default()
        );
    }

    #[test]
    fn verification_follows_libpq() {
        let dir = tempfile::tempdir().unwrap();
        let missing = TlsFiles {
            root_cert: Some(dir.path().join("root.crt")),
            ..TlsFiles::default()
        };
        for mode in [SslMode::Allow, SslMode::Prefer, SslMode::Require] {
            assert_eq!(connector(mode, &missing).unwrap().1, Verify::Nothing);
        }
        for mode in [SslMode::VerifyCa, SslMode::VerifyFull] {
            let e = connector(mode, &missing).err().unwrap();
            assert!(e.contains("root.crt\" does not exist"), "{e}");
            let e = connector(mode, &TlsFiles::default()).err().unwrap();
            assert!(e.contains("PGSSLROOTCERT"), "{e}");
        }
        // A root file that holds no certificate is an error in every mode that reads it.
        std::fs::write(dir.path().join("root.crt"), "not a certificate\n").unwrap();
        let e = connector(SslMode::Require, &missing).err().unwrap();
        assert!(e.contains("contains no certificates"), "{e}");
        let _ = cancel_connector();
    }

    #[test]
    fn client_key_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k");
        std::fs::write(&key, "x").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(check_key_permissions(&key).is_ok());
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(check_key_permissions(&key).is_err());
        // A certificate without its key is an error; a key without a certificate is ignored.
        let cert = dir.path().join("c");
        std::fs::write(&cert, "").unwrap();
        let files = TlsFiles {
            root_cert: None,
            cert: Some(cert),
            key: Some(dir.path().join("nokey")),
        };
        let e = client_identity(&files).err().unwrap();
        assert!(e.contains("contains no certificates"), "{e}");
        let files = TlsFiles {
            cert: Some(dir.path().join("nocert")),
            key: Some(key),
            ..files
        };
        assert!(client_identity(&files).unwrap().is_none());
    }
}
