//! The engine's control routes (`/health`, `/ready`, `/v1/status`, `POST /v1/shutdown`) for synchronous callers:
//! the supervisor, `engine start|status|stop`, `doctor`. One request at a time with a short deadline and the bearer
//! token, through the same HTTP stack as the session client (`crate::http`: reqwest, and the pinned certificate of
//! a local engine serving TLS).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Health {
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub protocol_version: String,
    #[serde(default)]
    pub engine_version: String,
    #[serde(default)]
    pub pid: i64,
    #[serde(default)]
    pub instance_id: String,
    #[serde(default)]
    pub started_at_unix: f64,
}

#[derive(Debug)]
pub enum ClientError {
    /// Nothing could be reached (refused, no route, connect timed out).
    Unreachable(String),
    /// Connected, but no complete answer came within the timeout: the engine is there and busy, not gone.
    Slow(Duration),
    /// Something answered, but not as expected (status, body).
    Http(u16, String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Unreachable(why) => write!(f, "not reachable: {why}"),
            ClientError::Slow(t) => write!(
                f,
                "connected, but it answered nothing within {} ms (busy)",
                t.as_millis()
            ),
            ClientError::Http(code, body) => {
                let body: String = body.chars().take(200).collect();
                write!(f, "HTTP {code}: {body}")
            }
        }
    }
}

pub struct EngineClient {
    /// `http(s)://host:port`, no trailing slash.
    base: String,
    token: Option<String>,
    timeout: Duration,
    /// The certificate file of a local engine serving TLS (trusted by that certificate alone).
    pin: Option<PathBuf>,
}

impl EngineClient {
    /// The client of the engine at `host:port`. A wildcard bind is reached on loopback. `None` for a host that is
    /// not an address or a name.
    pub fn new(
        host: &str,
        port: u16,
        token: Option<String>,
        timeout: Duration,
    ) -> Option<EngineClient> {
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let connect_host = match bare {
            "0.0.0.0" => "127.0.0.1",
            "::" => "::1",
            h => h,
        };
        if connect_host.is_empty() || connect_host.contains(['/', '?', '#', '@', ' ']) {
            return None;
        }
        let base = if connect_host.contains(':') {
            format!("http://[{connect_host}]:{port}")
        } else {
            format!("http://{connect_host}:{port}")
        };
        Some(EngineClient {
            base,
            token,
            timeout,
            pin: None,
        })
    }

    /// Over TLS, trusting exactly the certificates in `cert_file`.
    pub fn with_pinned_tls(mut self, cert_file: PathBuf) -> EngineClient {
        if let Some(rest) = self.base.strip_prefix("http://") {
            self.base = format!("https://{rest}");
        }
        self.pin = Some(cert_file);
        self
    }

    pub fn request(&self, method: &str, path: &str) -> Result<(u16, String), ClientError> {
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|e| ClientError::Unreachable(e.to_string()))?;
        let http = crate::http::builder(&self.base, self.pin.as_deref())
            .and_then(|b| {
                Ok(b.connect_timeout(self.timeout)
                    .timeout(self.timeout)
                    .pool_max_idle_per_host(0)
                    .build()?)
            })
            .map_err(|e| ClientError::Unreachable(format!("{e:#}")))?;
        let mut req = http
            .request(method, format!("{}{path}", self.base))
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let timeout = self.timeout;
        let call = async move {
            let resp = req.send().await?;
            let code = resp.status().as_u16();
            Ok::<_, reqwest::Error>((code, resp.text().await?))
        };
        match crate::http::block_on(call) {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(classify(&e, timeout)),
            Err(e) => Err(ClientError::Unreachable(format!("{e:#}"))),
        }
    }

    pub fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let (code, body) = self.request("GET", path)?;
        if code != 200 {
            return Err(ClientError::Http(code, body));
        }
        serde_json::from_str(&body).map_err(|e| ClientError::Http(code, format!("{e}: {body}")))
    }

    pub fn health(&self) -> Result<Health, ClientError> {
        self.get_json("/health")
    }

    pub fn shutdown(&self) -> Result<(), ClientError> {
        match self.request("POST", "/v1/shutdown")? {
            (200..=299, _) => Ok(()),
            (code, body) => Err(ClientError::Http(code, body)),
        }
    }
}

/// A connection that could not be made (refused, no route, a connect that timed out, a TLS handshake refused) is
/// unreachable; one made that then answered nothing in time is slow.
fn classify(e: &reqwest::Error, timeout: Duration) -> ClientError {
    if e.is_timeout() && !e.is_connect() {
        ClientError::Slow(timeout)
    } else {
        ClientError::Unreachable(crate::http::error_chain(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_bracketed_ipv6_and_wildcards() {
        let c = EngineClient::new("[::1]", 9099, None, Duration::from_millis(10)).unwrap();
        assert_eq!(c.base, "http://[::1]:9099");
        let c = EngineClient::new("::1", 9099, None, Duration::from_millis(10)).unwrap();
        assert_eq!(c.base, "http://[::1]:9099");
        let c = EngineClient::new("0.0.0.0", 9099, None, Duration::from_millis(10)).unwrap();
        assert_eq!(c.base, "http://127.0.0.1:9099");
        let c = c.with_pinned_tls("/cert.pem".into());
        assert_eq!(c.base, "https://127.0.0.1:9099");
        assert!(EngineClient::new("", 9099, None, Duration::from_millis(10)).is_none());
    }

    #[test]
    fn a_read_timeout_is_slow_and_a_refused_connect_unreachable() {
        // Accepts (the kernel completes the handshake on the backlog) but never answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let c = EngineClient::new("127.0.0.1", port, None, Duration::from_millis(100)).unwrap();
        let e = c.health().unwrap_err();
        assert!(matches!(e, ClientError::Slow(_)), "{e}");
        assert!(
            e.to_string().contains("answered nothing within 100 ms"),
            "{e}"
        );
        drop(listener);
        let e = c.health().unwrap_err();
        assert!(matches!(e, ClientError::Unreachable(_)), "{e}");
    }

    #[test]
    fn answers_and_refusals_are_told_apart() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            for answer in [
                "HTTP/1.1 200 OK\r\ncontent-length: 40\r\n\r\n{\"status\":\"ok\",\"protocol_version\":\"1.0\"}",
                "HTTP/1.1 401 Unauthorized\r\ncontent-length: 2\r\n\r\n{}",
            ] {
                let (mut s, _) = listener.accept().unwrap();
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).unwrap();
                let request = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
                assert!(request.contains("authorization: bearer t0ken"), "{request}");
                s.write_all(answer.as_bytes()).unwrap();
            }
        });
        let c = EngineClient::new(
            "127.0.0.1",
            port,
            Some("t0ken".into()),
            Duration::from_secs(5),
        )
        .unwrap();
        let h = c.health().unwrap();
        assert_eq!(
            (h.status.as_str(), h.protocol_version.as_str()),
            ("ok", "1.0")
        );
        assert!(matches!(c.health(), Err(ClientError::Http(401, _))));
        server.join().unwrap();
    }
}
