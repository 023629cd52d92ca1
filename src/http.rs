//! The one HTTP stack for every call to an engine: the session API (`client`), the control routes that the
//! supervisor, `engine status`, `doctor` and `stop` use (`engine_client`), and the TLS of the realtime bus.
//! reqwest over rustls.
//!
//! Trust: a remote engine's certificate is verified against the system's CA store plus `SSL_CERT_FILE`. The local
//! engine serving TLS (`engine start --ssl-certfile`) is reached at the address it was bound to, a name its
//! certificate need not carry, so it is trusted by its certificate itself: the presented certificate must be one
//! of those in the file it was given, byte for byte. No CA and no hostname is involved, and the token is only ever
//! sent to a server holding that certificate's key.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

/// A reqwest client builder for `base` (`http(s)://host:port`) with its TLS trust set; the caller adds timeouts.
/// `pin`: the certificate file of a local engine serving TLS.
pub(crate) fn builder(base: &str, pin: Option<&Path>) -> anyhow::Result<reqwest::ClientBuilder> {
    let mut b = reqwest::Client::builder()
        .tcp_nodelay(true)
        .user_agent(concat!("breadboard/", env!("CARGO_PKG_VERSION")));
    if is_loopback_url(base) {
        // reqwest sends every request through HTTP_PROXY / ALL_PROXY, loopback included (NO_PROXY alone exempts a
        // host): a proxy's 127.0.0.1 is not ours, so a local engine is always reached directly.
        b = b.no_proxy();
    }
    Ok(match pin {
        Some(cert_file) if base.starts_with("https://") => {
            b.use_preconfigured_tls(pinned_tls(cert_file)?)
        }
        // Loading the system's CA store costs milliseconds that a plain-HTTP call does not need.
        _ if !base.starts_with("https://") => b.tls_built_in_root_certs(false),
        _ => b,
    })
}

/// Whether `base` (`http(s)://host:port`) names this machine: 127.0.0.0/8, ::1 or localhost.
fn is_loopback_url(base: &str) -> bool {
    let Some(rest) = base.split_once("://").map(|(_, r)| r) else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A rustls configuration that accepts exactly the certificates in `cert_file` (PEM).
pub(crate) fn pinned_tls(cert_file: &Path) -> anyhow::Result<rustls::ClientConfig> {
    let certs = read_certs(cert_file)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Pinned {
        certs,
        algorithms: provider.signature_verification_algorithms,
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(config)
}

/// The certificates of a PEM file: at least one, else an error naming the file.
pub(crate) fn read_certs(cert_file: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| {
            format!(
                "could not read the certificate file {}",
                cert_file.display()
            )
        })?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
        cert_file.display()
    );
    Ok(certs)
}

#[derive(Debug)]
struct Pinned {
    certs: Vec<CertificateDer<'static>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.certs.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    // The handshake signatures are still checked: they prove the server holds the certificate's key.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Runs `f` to completion on a current-thread runtime of its own. Synchronous code (the supervisor, `engine
/// status`, the stop ladder) calls the async client through this; when the caller is itself inside a runtime (a
/// client command that starts the engine), the future runs on a scoped thread, since a runtime cannot block inside
/// another.
pub(crate) fn block_on<F>(f: F) -> anyhow::Result<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    let run = move || -> anyhow::Result<F::Output> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(rt.block_on(f))
    };
    if tokio::runtime::Handle::try_current().is_err() {
        return run();
    }
    std::thread::scope(|s| {
        s.spawn(run)
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the HTTP call panicked")))
    })
}

/// Why a request failed, on one line, for a message that already says which URL. reqwest's own text ("error sending
/// request for url (...)", "client error (Connect)") only says where; the reason is in its sources ("tcp connect
/// error: Connection refused", a TLS refusal, a DNS failure), each said once, without the OS's error number.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cause = Some(e);
    while let Some(c) = cause {
        let text = c.to_string();
        let text = strip_os_error(&text);
        let wrapper = (text.starts_with("error sending request")
            || text.starts_with("client error ("))
            && c.source().is_some();
        let said = parts.iter().any(|p| p.contains(text));
        if !wrapper && !said {
            parts.push(text.to_owned());
        }
        cause = c.source();
    }
    parts.join(": ")
}

/// "Connection refused (os error 111)" -> "Connection refused": the number differs between systems and says
/// nothing more.
fn strip_os_error(text: &str) -> &str {
    match text.rfind(" (os error ") {
        Some(i) if text.ends_with(')') => &text[..i],
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_failed_request_says_its_reason_once_without_the_wrappers() {
        let refused = reqwest::blocking::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get("http://127.0.0.1:1/health")
            .send()
            .unwrap_err();
        let text = super::error_chain(&refused);
        assert!(text.contains("Connection refused"), "{text}");
        assert!(
            !text.contains("error sending request") && !text.contains("os error"),
            "{text}"
        );
        assert_eq!(
            super::strip_os_error("No such file (os error 2)"),
            "No such file"
        );
    }

    #[test]
    fn loopback_urls_are_told_from_remote_ones() {
        for url in [
            "http://127.0.0.1:9099",
            "https://127.0.0.2:1",
            "http://[::1]:9099",
            "http://localhost:9099",
            "https://LOCALHOST",
        ] {
            assert!(super::is_loopback_url(url), "{url}");
        }
        for url in [
            "http://10.0.0.1:9099",
            "https://engine.example.com",
            "http://[2001:db8::1]:1",
            "not a url",
        ] {
            assert!(!super::is_loopback_url(url), "{url}");
        }
    }
}
