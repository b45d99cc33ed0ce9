//! Inbound TLS for [`super::HttpServer`]: the certificate and key of `[http] tls` (or
//! `llmchat up --tls-cert/--tls-key`), the rustls configuration offering HTTP/2 and HTTP/1.1
//! through ALPN, and reloading both files on SIGHUP.
//!
//! Certificates are renewed without a restart (an ACME client rewrites the files, then sends
//! SIGHUP): handshakes after a reload get the new certificate from [`Current`], connections
//! already open keep theirs. A reload that cannot read the files, or finds a key that does not
//! match, keeps the old certificate serving and logs which file is wrong: a renewal caught
//! half-written must not take the site down. At start-up the same problems stop the host.
//!
//! The crypto provider is rustls's `ring`, the one the outbound clients (reqwest, Redis) are
//! built with, so the binary carries one.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use anyhow::{Context, Result, anyhow, bail};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, ServerConfig};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::manifest::TlsFiles;

/// Offered in this order: a client that speaks both gets HTTP/2.
const ALPN_H2: &[u8] = b"h2";
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// The TLS side of the listener: what to accept connections with, and what to reload.
pub struct Tls {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: Arc<Current>,
    acceptor: TlsAcceptor,
    /// Installed with the certificate, before the host says it listens: SIGHUP's default
    /// action ends the process, so a reload requested early must find the handler in place.
    /// Taken by [`Tls::reload_on_hangup`].
    hangup: Mutex<Option<Hangup>>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

impl Tls {
    /// Reads the certificate chain and key of `files` and installs the SIGHUP handler; an
    /// error names the file at fault. Call it inside the runtime.
    pub fn load(files: &TlsFiles) -> Result<Tls> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = load_certified_key(files, &provider)?;
        let current = Arc::new(Current(RwLock::new(Arc::new(key))));
        let mut config = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("configuring TLS")?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP1.to_vec()];
        let hangup = Hangup::install()?;
        tracing::info!(
            cert = %files.cert.display(),
            key = %files.key.display(),
            "serving HTTPS: HTTP/2 and HTTP/1.1 through ALPN; SIGHUP reloads the certificate and key"
        );
        Ok(Tls {
            files: files.clone(),
            provider,
            current,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            hangup: Mutex::new(Some(hangup)),
        })
    }

    /// The handshake of one connection, with the certificate current when it starts.
    pub(super) fn accept<IO>(&self, io: IO) -> tokio_rustls::Accept<IO>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        self.acceptor.accept(io)
    }

    /// Reads both files again and, when they make a valid pair, serves them to new
    /// connections; otherwise keeps the current pair and says why.
    fn reload(&self) {
        // Two small local files, once per SIGHUP: read in place.
        match load_certified_key(&self.files, &self.provider) {
            Ok(key) => {
                *self
                    .current
                    .0
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
                tracing::info!(
                    cert = %self.files.cert.display(),
                    "reloaded the TLS certificate and key; new connections get them"
                );
            }
            Err(e) => tracing::error!(
                "reloading the TLS certificate and key on SIGHUP failed, still serving the \
                 previous ones: {e:#}"
            ),
        }
    }

    /// Reloads on every SIGHUP until `shutdown`. The server runs it beside its accept loop.
    pub(super) async fn reload_on_hangup(&self, shutdown: &CancellationToken) {
        let taken = self
            .hangup
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(mut hangup) = taken else {
            return;
        };
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                received = hangup.recv() => {
                    if !received {
                        return;
                    }
                    self.reload();
                }
            }
        }
    }
}

/// Whether the client chose HTTP/2 in the handshake.
pub(super) fn negotiated_h2<IO>(stream: &TlsStream<IO>) -> bool {
    stream.get_ref().1.alpn_protocol() == Some(ALPN_H2)
}

/// The certificate and key that new handshakes get; replaced whole by a reload.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.0
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

/// SIGHUP, where there is such a thing.
#[cfg(unix)]
struct Hangup(tokio::signal::unix::Signal);

#[cfg(unix)]
impl Hangup {
    fn install() -> Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        let signal = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
        Ok(Self(signal))
    }

    /// `false` once no more signals can arrive.
    async fn recv(&mut self) -> bool {
        self.0.recv().await.is_some()
    }
}

#[cfg(not(unix))]
struct Hangup;

#[cfg(not(unix))]
impl Hangup {
    fn install() -> Result<Self> {
        Ok(Self)
    }

    async fn recv(&mut self) -> bool {
        std::future::pending().await
    }
}

/// The chain of `files.cert` (server certificate first) with the key of `files.key`, checked
/// to belong together. Each error names the file it is about.
fn load_certified_key(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey> {
    let (cert, key) = (&files.cert, &files.key);
    let chain = read_chain(cert)?;
    let key_der = read_key(key)?;
    let signer = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| anyhow!("TLS key `{}` cannot be used: {e}", key.display()))?;
    let certified = CertifiedKey::new(chain, signer);
    match certified.keys_match() {
        // `Unknown`: the provider cannot tell the key's public half; the handshake will.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => bail!(
            "TLS key `{}` does not belong to the certificate `{}`",
            key.display(),
            cert.display()
        ),
        Err(e) => bail!("TLS certificate `{}` cannot be used: {e}", cert.display()),
    }
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let text = std::fs::read(path)
        .with_context(|| format!("reading the TLS certificate `{}`", path.display()))?;
    let chain = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("TLS certificate `{}` is not valid PEM: {e}", path.display()))?;
    if chain.is_empty() {
        bail!(
            "TLS certificate `{}` holds no `BEGIN CERTIFICATE` block",
            path.display()
        );
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let text =
        std::fs::read(path).with_context(|| format!("reading the TLS key `{}`", path.display()))?;
    PrivateKeyDer::from_pem_slice(&text).map_err(|e| match e {
        pem::Error::NoItemsFound => anyhow!(
            "TLS key `{}` holds no private key: expected an unencrypted PEM `PRIVATE KEY` \
             (PKCS#8), `RSA PRIVATE KEY` or `EC PRIVATE KEY` block",
            path.display()
        ),
        e => anyhow!("TLS key `{}` is not valid PEM: {e}", path.display()),
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    /// Test certificates and keys made once with `openssl` (see `testdata/README.md`).
    fn testdata(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/http/testdata")
            .join(name)
    }

    fn files(cert: &str, key: &str) -> TlsFiles {
        TlsFiles {
            cert: testdata(cert),
            key: testdata(key),
        }
    }

    fn load(cert: &str, key: &str) -> Result<CertifiedKey> {
        load_certified_key(&files(cert, key), &rustls::crypto::ring::default_provider())
    }

    fn error(cert: &str, key: &str) -> String {
        format!("{:#}", load(cert, key).expect_err("an error"))
    }

    #[test]
    fn pkcs8_rsa_and_sec1_keys_load_with_their_certificates() {
        for (cert, key) in [
            ("ec.crt", "ec.key"),
            ("ec.crt", "ec-sec1.key"),
            ("rsa.crt", "rsa-pkcs1.key"),
        ] {
            let certified = load(cert, key).unwrap_or_else(|e| panic!("{cert} + {key}: {e:#}"));
            assert_eq!(certified.cert.len(), 1, "{cert}");
        }
    }

    #[test]
    fn every_certificate_of_a_chain_is_kept_in_order() {
        let chain = read_chain(&testdata("chain.crt")).unwrap();
        let first = read_chain(&testdata("ec.crt")).unwrap();
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[0], first[0]);
    }

    #[test]
    fn a_missing_file_is_named() {
        let e = error("nope.crt", "ec.key");
        assert!(
            e.starts_with("reading the TLS certificate `") && e.contains("nope.crt`"),
            "{e}"
        );
        let e = error("ec.crt", "nope.key");
        assert!(
            e.starts_with("reading the TLS key `") && e.contains("nope.key`"),
            "{e}"
        );
    }

    #[test]
    fn a_file_without_the_expected_block_is_named() {
        // A key where the certificate belongs, and the other way round.
        let e = error("ec.key", "ec.key");
        assert!(
            e.contains("ec.key` holds no `BEGIN CERTIFICATE` block"),
            "{e}"
        );
        let e = error("ec.crt", "ec.crt");
        assert!(e.contains("ec.crt` holds no private key"), "{e}");
        let e = error("ec.crt", "garbage.pem");
        assert!(e.contains("garbage.pem` is not valid PEM"), "{e}");
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let e = error("ec.crt", "other-ec.key");
        assert!(
            e.contains("other-ec.key` does not belong to the certificate `")
                && e.contains("ec.crt`"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_failed_reload_keeps_the_current_certificate_and_a_good_one_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let live = TlsFiles {
            cert: dir.path().join("live.crt"),
            key: dir.path().join("live.key"),
        };
        std::fs::copy(testdata("ec.crt"), &live.cert).unwrap();
        std::fs::copy(testdata("ec.key"), &live.key).unwrap();
        let tls = Tls::load(&live).unwrap();
        let served = || tls.current.0.read().unwrap().cert[0].clone();
        let ec = served();

        std::fs::write(&live.cert, "half a renewal").unwrap();
        tls.reload();
        assert_eq!(served(), ec, "a broken file keeps the old certificate");

        std::fs::copy(testdata("rsa.crt"), &live.cert).unwrap();
        std::fs::copy(testdata("rsa-pkcs1.key"), &live.key).unwrap();
        tls.reload();
        assert_eq!(served(), read_chain(&testdata("rsa.crt")).unwrap()[0]);
    }
}
