//! The one HTTP client for the engine's control routes (`/health`, `/ready`, `/v1/status`, `POST /v1/shutdown`):
//! a blocking HTTP/1.1 request over `std::net::TcpStream` with short timeouts and the bearer token. No TLS and no
//! connection pool: these are loopback calls that must cost a few milliseconds (`engine status` budget: 10 ms).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
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
    /// Every address the host resolves to, tried in order (`localhost` may give ::1 before 127.0.0.1).
    addrs: Vec<SocketAddr>,
    host_header: String,
    token: Option<String>,
    timeout: Duration,
}

impl EngineClient {
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
        // A wildcard bind is reached on loopback.
        let connect_host = match bare {
            "0.0.0.0" => "127.0.0.1",
            "::" => "::1",
            h => h,
        };
        let addrs: Vec<SocketAddr> = (connect_host, port).to_socket_addrs().ok()?.collect();
        if addrs.is_empty() {
            return None;
        }
        let host_header = if connect_host.contains(':') {
            format!("[{connect_host}]:{port}")
        } else {
            format!("{connect_host}:{port}")
        };
        Some(EngineClient {
            addrs,
            host_header,
            token,
            timeout,
        })
    }

    pub fn request(&self, method: &str, path: &str) -> Result<(u16, String), ClientError> {
        let mut stream = self.connect()?;
        let _ = stream.set_read_timeout(Some(self.timeout));
        let _ = stream.set_write_timeout(Some(self.timeout));
        let _ = stream.set_nodelay(true);
        let auth = self
            .token
            .as_ref()
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\n{auth}Accept: application/json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.host_header
        );
        stream
            .write_all(req.as_bytes())
            .map_err(|e| ClientError::Unreachable(e.to_string()))?;
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if complete(&buf) {
                        break;
                    }
                }
                // A signal (the supervisor catches SIGTERM) interrupts the read; it is not an answer.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // A read timeout (EAGAIN on a socket with SO_RCVTIMEO) is an engine too busy to answer in time.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(ClientError::Slow(self.timeout))
                }
                Err(e) if buf.is_empty() => return Err(ClientError::Unreachable(e.to_string())),
                Err(_) => break,
            }
        }
        parse_response(&buf)
            .ok_or_else(|| ClientError::Unreachable("malformed HTTP response".into()))
    }

    fn connect(&self) -> Result<TcpStream, ClientError> {
        let mut last = None;
        for addr in &self.addrs {
            match TcpStream::connect_timeout(addr, self.timeout) {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(format!("{addr}: {e}")),
            }
        }
        Err(ClientError::Unreachable(last.unwrap_or_default()))
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

fn header_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

fn content_length(head: &str) -> Option<usize> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().ok())?
    })
}

/// A response is complete when its Content-Length is in (else we read to EOF).
fn complete(buf: &[u8]) -> bool {
    let Some(end) = header_end(buf) else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    content_length(&head).is_some_and(|len| buf.len() >= end + len)
}

fn parse_response(buf: &[u8]) -> Option<(u16, String)> {
    let end = header_end(buf)?;
    let head = String::from_utf8_lossy(&buf[..end]);
    let code: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
    let mut body = &buf[end..];
    if let Some(len) = content_length(&head) {
        body = &body[..len.min(body.len())];
    }
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_vec()
    };
    Some((code, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(nl) = body.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&body[..nl]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = nl + 2;
        let stop = (start + size).min(body.len());
        out.extend_from_slice(&body[start..stop]);
        body = body.get(stop + 2..).unwrap_or(&[]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_bracketed_ipv6_and_wildcards() {
        let c = EngineClient::new("[::1]", 9099, None, Duration::from_millis(10)).unwrap();
        assert_eq!(c.addrs, vec!["[::1]:9099".parse::<SocketAddr>().unwrap()]);
        assert_eq!(c.host_header, "[::1]:9099");
        let c = EngineClient::new("::1", 9099, None, Duration::from_millis(10)).unwrap();
        assert_eq!(c.host_header, "[::1]:9099");
        let c = EngineClient::new("0.0.0.0", 9099, None, Duration::from_millis(10)).unwrap();
        assert_eq!(
            c.addrs,
            vec!["127.0.0.1:9099".parse::<SocketAddr>().unwrap()]
        );
    }

    #[test]
    fn tries_every_resolved_address() {
        // A listener on 127.0.0.1 only is reached even when a dead address comes first.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_addr = dead.local_addr().unwrap();
        drop(dead);
        let c = EngineClient {
            addrs: vec![dead_addr, SocketAddr::from(([127, 0, 0, 1], port))],
            host_header: format!("127.0.0.1:{port}"),
            token: None,
            timeout: Duration::from_millis(500),
        };
        assert!(c.connect().is_ok());
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
    fn parses_responses() {
        let r = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
        assert!(complete(r));
        assert_eq!(parse_response(r), Some((200, "{}".into())));
        let c = b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
        assert_eq!(parse_response(c), Some((202, "ok".into())));
    }
}
