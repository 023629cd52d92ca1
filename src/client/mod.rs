//! The one client of the engine's session API (`ask`, `sessions ...`), for the local engine and for remote ones:
//! async (tokio, current-thread) over reqwest, SSE framed by sse-stream.
//!
//! [`connect`] finds the engine (the local registration, or `--url` / `BREADBOARD_URL` / `[client] url`), starts
//! the local one when the command may, and checks the handshake; [`Client`] then makes the requests and maps every
//! refusal to an error with its exit code and the command that fixes it. [`follow`] reads a session's events
//! without losing or repeating one across disconnects and engine restarts.

mod backoff;
mod connect;
pub mod conversation;
mod follow;
pub mod realtime;
pub mod render;
pub mod state;
pub mod wire;

use std::time::Duration;

use serde_json::Value;

pub use connect::{connect, Connect, StartPolicy};
pub use follow::{follow, Ended, Flow, FollowOpts, Followed, OnInterrupt, Start};

use crate::context::Ctx;
use crate::error::{CliError, ErrorKind};
use crate::http::error_chain;
use wire::{Created, ErrorBody, Health, Summary};

/// Where requests go and with which token.
#[derive(Clone)]
pub struct Endpoint {
    /// `http(s)://host:port`, no trailing slash.
    pub base: String,
    token: Option<String>,
    /// Where the token came from, for messages ("the token file /h/run/engine.token"); never the token.
    pub token_origin: Option<String>,
    /// The local engine's instance (its registration), `None` for a remote engine.
    pub instance_id: Option<String>,
    /// The local supervisor's automatic restarts so far: a higher count after a disconnect means a crash.
    pub restarts: u32,
    /// The certificate file of the local engine serving TLS: it alone is trusted (`crate::http`).
    pub tls_pin: Option<std::path::PathBuf>,
}

/// Never the token itself: a debug print of an endpoint (in a log, a panic) must not leak it.
impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_origin", &self.token_origin)
            .field("instance_id", &self.instance_id)
            .field("restarts", &self.restarts)
            .field("tls_pin", &self.tls_pin)
            .finish()
    }
}

impl Endpoint {
    pub fn is_local(&self) -> bool {
        self.instance_id.is_some()
    }

    /// "the engine at URL" / "the local engine at URL", for messages.
    pub fn describe(&self) -> String {
        if self.is_local() {
            format!("the local engine at {}", self.base)
        } else {
            format!("the engine at {}", self.base)
        }
    }

    /// A 401: names where the token came from, never its value.
    pub fn token_refused(&self) -> anyhow::Error {
        let at = self.describe();
        let (message, hint) = match (&self.token_origin, self.is_local()) {
            (Some(origin), true) => (
                format!("{at} refused the token from {origin}"),
                "breadboard engine restart  (issues a new token)".to_owned(),
            ),
            (Some(origin), false) => (
                format!("{at} refused the token from {origin}"),
                format!("put the engine's token in {origin} (or pass another with --token-file FILE)"),
            ),
            (None, _) => (
                format!("{at} wants a token and none was given"),
                "pass it with --token-file FILE, or set BREADBOARD_API_TOKEN_FILE (or BREADBOARD_API_TOKEN)"
                    .to_owned(),
            ),
        };
        CliError::new(ErrorKind::TokenRefused, message)
            .hint(hint)
            .into()
    }
}

pub struct Client<'a> {
    pub ctx: &'a Ctx<'a>,
    http: reqwest::Client,
    pub endpoint: Endpoint,
    /// The handshake mode, for the checks made again when a stream moves to a new local instance.
    mode: crate::engine::ProtocolMode,
}

/// A refusal or failure of one request, before it is turned into a [`CliError`].
#[derive(Debug)]
pub enum ApiError {
    Unreachable(String),
    Status(u16, ErrorBody),
}

/// What a request was about, for the message of a 404.
#[derive(Clone, Copy)]
pub enum About<'s> {
    Engine,
    Session(&'s str),
}

/// Runs a command's async part on a current-thread runtime: one connection at a time needs no more, and it keeps
/// the client's start-up and memory small.
pub fn block_on<F: std::future::Future>(f: F) -> anyhow::Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(rt.block_on(f))
}

/// The session client's HTTP client for `endpoint` (its TLS trust from [`crate::http`]).
pub(crate) fn http_client(endpoint: &Endpoint) -> anyhow::Result<reqwest::Client> {
    Ok(
        crate::http::builder(&endpoint.base, endpoint.tls_pin.as_deref())?
            .connect_timeout(Duration::from_secs(5))
            // The engine sends a keepalive comment every 15 s on an idle stream: 60 s of silence is a dead peer.
            .read_timeout(Duration::from_secs(60))
            .build()?,
    )
}

impl<'a> Client<'a> {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.endpoint.base)
    }

    pub(crate) fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, self.url(path));
        match &self.endpoint.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    pub(crate) async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ApiError> {
        let resp = req
            .send()
            .await
            .map_err(|e| ApiError::Unreachable(error_chain(&e)))?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(resp);
        }
        let body = resp.text().await.unwrap_or_default();
        let parsed = serde_json::from_str::<ErrorBody>(&body).unwrap_or_else(|_| ErrorBody {
            error: String::new(),
            detail: Value::String(body.chars().take(200).collect()),
            last_seq: None,
        });
        Err(ApiError::Status(status, parsed))
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
        about: About<'_>,
    ) -> anyhow::Result<T> {
        let resp = self.send(req).await.map_err(|e| self.error(e, about))?;
        let text = resp
            .text()
            .await
            .map_err(|e| self.error(ApiError::Unreachable(error_chain(&e)), about))?;
        serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "{} answered with something that is not protocol 1.0 JSON ({e}): {}",
                self.endpoint.describe(),
                text.chars().take(200).collect::<String>()
            )
        })
    }

    /// The [`CliError`] for a failed request: its exit code and the command that fixes it.
    pub fn error(&self, e: ApiError, about: About<'_>) -> anyhow::Error {
        let at = self.endpoint.describe();
        match e {
            ApiError::Unreachable(why) => self.unreachable(&why),
            ApiError::Status(401, _) => self.endpoint.token_refused(),
            ApiError::Status(404, _) => match about {
                About::Session(id) => CliError::new(
                    ErrorKind::SessionNotFound,
                    format!("{at} has no session {id}"),
                )
                .hint("breadboard sessions list")
                .into(),
                About::Engine => CliError::new(
                    ErrorKind::ProtocolMismatch,
                    format!(
                        "{at} does not serve this route: is it a BreadBoard engine (protocol 1.0)?"
                    ),
                )
                .into(),
            },
            ApiError::Status(409, body) => conflict(&at, &body, about),
            ApiError::Status(code, body) => {
                let kind = if code == 400 || code == 422 {
                    ErrorKind::Usage
                } else {
                    ErrorKind::Failure
                };
                CliError::new(
                    kind,
                    format!(
                        "{at} answered {code} {}: {}",
                        body.error,
                        body.detail_text()
                    ),
                )
                .into()
            }
        }
    }

    fn unreachable(&self, why: &str) -> anyhow::Error {
        let hint = if why.contains("certificate") {
            "the engine's TLS certificate is not trusted here: add its CA to the system's store, or point \
             SSL_CERT_FILE at it"
                .to_owned()
        } else if self.endpoint.is_local() {
            "breadboard engine status (and `breadboard engine start` if it is not running)"
                .to_owned()
        } else {
            format!(
                "check that the engine runs and that {} is its address",
                self.endpoint.base
            )
        };
        CliError::new(
            ErrorKind::EngineUnavailable,
            format!("could not reach {}: {why}", self.endpoint.describe()),
        )
        .hint(hint)
        .into()
    }

    pub async fn health(&self) -> anyhow::Result<Health> {
        self.json(self.request(reqwest::Method::GET, "/health"), About::Engine)
            .await
    }

    /// Every session's summary as the engine sent it (oldest first).
    pub async fn list(&self) -> anyhow::Result<Vec<Value>> {
        self.json(
            self.request(reqwest::Method::GET, "/v1/sessions"),
            About::Engine,
        )
        .await
    }

    /// One session's summary, raw (for `--json`).
    pub async fn get_raw(&self, id: &str) -> anyhow::Result<Value> {
        self.json(
            self.request(reqwest::Method::GET, &format!("/v1/sessions/{id}")),
            About::Session(id),
        )
        .await
    }

    pub async fn summary(&self, id: &str) -> anyhow::Result<Summary> {
        Ok(serde_json::from_value(self.get_raw(id).await?)?)
    }

    pub async fn create(
        &self,
        task: &str,
        provider: Option<&str>,
        metadata: Value,
    ) -> anyhow::Result<Created> {
        let body = wire::CreateSession {
            task,
            provider,
            metadata,
        };
        self.json(
            self.request(reqwest::Method::POST, "/v1/sessions")
                .json(&body),
            About::Engine,
        )
        .await
    }

    /// Posts an input with an `input_id` of our own; returns it when the engine echoed it (then its turn's
    /// `user_message` carries it too), `None` for an engine that does not know input ids.
    pub async fn input(&self, id: &str, content: &str) -> anyhow::Result<Option<String>> {
        let input_id = crate::fsutil::random_hex(12)?;
        let req = self
            .request(reqwest::Method::POST, &format!("/v1/sessions/{id}/input"))
            .json(&wire::Input {
                content,
                input_id: Some(&input_id),
            });
        let answer = self
            .send(req)
            .await
            .map_err(|e| self.error(e, About::Session(id)))?;
        let answer: wire::InputAnswer = answer.json().await.unwrap_or(wire::InputAnswer {
            status: String::new(),
            input_id: None,
        });
        Ok(answer.input_id.filter(|echoed| *echoed == input_id))
    }

    /// `POST /v1/sessions/{id}/command`; returns the answer's `detail`.
    pub async fn command(
        &self,
        id: &str,
        command: &str,
        payload: Value,
    ) -> anyhow::Result<wire::CommandDetail> {
        let req = self
            .request(reqwest::Method::POST, &format!("/v1/sessions/{id}/command"))
            .json(&wire::Command { command, payload });
        let answer: wire::CommandAnswer = self.json(req, About::Session(id)).await?;
        Ok(answer.detail)
    }

    pub async fn set_model(&self, id: &str, model: &str) -> anyhow::Result<()> {
        self.command(id, "set_model", serde_json::json!({ "model": model }))
            .await
            .map(|_| ())
    }

    pub async fn delete(&self, id: &str) -> anyhow::Result<()> {
        let req = self.request(reqwest::Method::DELETE, &format!("/v1/sessions/{id}"));
        self.send(req)
            .await
            .map_err(|e| self.error(e, About::Session(id)))?;
        Ok(())
    }
}

/// A 409: the stream's resume point is gone from the engine, or the session takes no more input.
fn conflict(at: &str, body: &ErrorBody, about: About<'_>) -> anyhow::Error {
    let id = match about {
        About::Session(id) => id,
        About::Engine => "ID",
    };
    if body.error == "resume_window_exceeded" {
        return CliError::new(
            ErrorKind::ResumeWindowExceeded,
            format!(
                "{at} no longer has the events this stream would resume from (it has up to seq {})",
                body.last_seq
                    .map_or_else(|| "?".to_owned(), |s| s.to_string())
            ),
        )
        .hint(format!(
            "follow again from what it has: breadboard sessions follow {id} --from-seq 0"
        ))
        .into();
    }
    CliError::new(
        ErrorKind::SessionClosed,
        format!("session {id} takes no more input: {}", body.detail_text()),
    )
    .hint("start a new session: breadboard sessions new (or `breadboard ask` without --session)")
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_debug_print_never_shows_the_token() {
        let e = Endpoint {
            base: "http://127.0.0.1:1".into(),
            token: Some("s3cr3t-token-value".into()),
            token_origin: Some("the token file /t".into()),
            instance_id: None,
            restarts: 0,
            tls_pin: None,
        };
        let text = format!("{e:?}");
        assert!(!text.contains("s3cr3t"), "{text}");
        assert!(
            text.contains("<redacted>") && text.contains("http://127.0.0.1:1"),
            "{text}"
        );
    }
}
