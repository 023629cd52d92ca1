//! The engine's realtime bus (`GET /v1/realtime`, a WebSocket; docs/protocol.md "Realtime bus") through
//! tokio-tungstenite on the client's runtime, and [`watch_sessions`], the live session list of `sessions list
//! --watch`: subscribe to `sessions`, take its snapshot, apply its events; on any disconnect reconnect with backoff
//! (100 ms doubling to 5 s, with jitter), subscribe again and replace the list with the fresh snapshot. A local
//! engine restarted meanwhile (new port or token) is found through its registration, as the event follower does.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::Client;
use crate::error::{CliError, ErrorKind};

/// The subprotocol the engine answers; the token goes in `Authorization`, never in the URL.
const SUBPROTOCOL: &str = "breadboard.v1";
/// Our own `ping` when the bus has been quiet this long; no answer within the next period is a dead peer.
const PING_EVERY: Duration = Duration::from_secs(15);
/// How often the watcher may redraw: a burst of changes is drawn once, and the last one is never left undrawn.
const TICK: Duration = Duration::from_millis(100);
/// The close code of a connection that fell a whole queue behind (docs/protocol.md).
const CLOSE_FELL_BEHIND: u16 = 4008;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A message of the `sessions` topic, as the watcher sees it.
#[derive(Debug)]
pub enum SessionsUpdate {
    /// Every session's summary, replacing whatever the watcher had; `raw` is the message as the engine sent it.
    Snapshot { raw: String, list: Vec<Value> },
    /// One change (`created`, `status`, `deleted`, `activity`): the message as the engine sent it, and its payload.
    Change { raw: String, change: Change },
    /// The connection broke; the watcher reconnects and will get a fresh snapshot.
    Disconnected(String),
    /// Every 100 ms while connected: the moment to draw what changed since the last one.
    Tick,
}

#[derive(Debug, Deserialize)]
pub struct Change {
    pub kind: String,
    pub session_id: String,
    #[serde(default)]
    pub summary: Option<Value>,
    #[serde(default)]
    pub last_seq: Option<u64>,
    #[serde(default)]
    pub last_activity_at: Option<String>,
}

impl Change {
    /// Applies the change to a list of session summaries as the engine sent them (a snapshot's, kept up to date):
    /// a deletion removes it, a summary replaces or adds it, an activity without one updates its seq and time.
    pub fn apply_to(self, sessions: &mut Vec<Value>) {
        let at = sessions
            .iter()
            .position(|s| s.get("session_id").and_then(Value::as_str) == Some(&self.session_id));
        match (self.kind.as_str(), at, self.summary) {
            ("deleted", Some(i), _) => {
                sessions.remove(i);
            }
            (_, Some(i), Some(summary)) => sessions[i] = summary,
            (_, None, Some(summary)) => sessions.push(summary),
            ("activity", Some(i), None) => {
                if let Some(obj) = sessions[i].as_object_mut() {
                    if let Some(seq) = self.last_seq {
                        obj.insert("last_seq".into(), seq.into());
                    }
                    if let Some(t) = self.last_activity_at {
                        obj.insert("last_activity_at".into(), t.into());
                    }
                }
            }
            _ => {}
        }
    }
}

#[derive(Deserialize)]
struct Incoming {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    payload: Value,
    #[serde(default)]
    message: Option<String>,
}

/// Why one connection ended.
enum Dropped {
    /// Worth retrying (refused, reset, closed, fell behind, silent peer).
    Retry(String),
    /// Not worth retrying (a refused token that the registration cannot replace, an engine without the bus).
    Fatal(anyhow::Error),
}

impl Client<'_> {
    /// The `ws(s)://` URL of the bus and the upgrade request carrying the token.
    fn bus_request(
        &self,
    ) -> anyhow::Result<tokio_tungstenite::tungstenite::handshake::client::Request> {
        let base = &self.endpoint.base;
        let ws = if let Some(rest) = base.strip_prefix("https://") {
            format!("wss://{rest}/v1/realtime")
        } else if let Some(rest) = base.strip_prefix("http://") {
            format!("ws://{rest}/v1/realtime")
        } else {
            anyhow::bail!("{base} is not an http(s) URL");
        };
        let mut request = ws.into_client_request()?;
        let headers = request.headers_mut();
        headers.insert(
            "sec-websocket-protocol",
            HeaderValue::from_static(SUBPROTOCOL),
        );
        if let Some(token) = &self.endpoint.token {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}"))?;
            value.set_sensitive(true);
            headers.insert("authorization", value);
        }
        Ok(request)
    }

    async fn open_bus(&self) -> Result<Socket, Dropped> {
        let request = self.bus_request().map_err(Dropped::Fatal)?;
        // The local engine serving TLS is trusted by its own certificate, as for every other call (crate::http).
        let connector = match &self.endpoint.tls_pin {
            Some(cert) => Some(tokio_tungstenite::Connector::Rustls(std::sync::Arc::new(
                crate::http::pinned_tls(cert).map_err(Dropped::Fatal)?,
            ))),
            None => None,
        };
        match tokio_tungstenite::connect_async_tls_with_config(request, None, true, connector).await
        {
            Ok((socket, _)) => Ok(socket),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let status = response.status().as_u16();
                Err(match status {
                    401 => Dropped::Fatal(self.endpoint.token_refused()),
                    404 => Dropped::Fatal(
                        CliError::new(
                            ErrorKind::EngineUnavailable,
                            format!(
                                "{} has no realtime bus (GET /v1/realtime answered 404)",
                                self.endpoint.describe()
                            ),
                        )
                        .hint("upgrade the engine: breadboard engine upgrade (or use `breadboard sessions list` without --watch)")
                        .into(),
                    ),
                    _ => Dropped::Retry(format!("the bus answered HTTP {status}")),
                })
            }
            Err(e) => Err(Dropped::Retry(super::error_chain(&e))),
        }
    }
}

/// Follows the `sessions` topic until Ctrl-C (exit 0: watching cancels nothing) or an error that retrying cannot
/// fix. `on` sees every update in order.
pub async fn watch_sessions(
    client: &mut Client<'_>,
    mut on: impl FnMut(SessionsUpdate),
) -> anyhow::Result<u8> {
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut backoff = super::backoff::Backoff::new();
    loop {
        let outcome = tokio::select! {
            r = watch_once(client, &mut on, &mut backoff) => r,
            _ = sigint.recv() => return Ok(0),
        };
        match outcome {
            Dropped::Fatal(e) => {
                // A local engine restarted with a new token or port: take its registration and go on.
                if super::follow::refresh_local_endpoint(client)? {
                    continue;
                }
                return Err(e);
            }
            Dropped::Retry(why) => {
                on(SessionsUpdate::Disconnected(why));
                let wait = backoff.next_wait();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = sigint.recv() => return Ok(0),
                }
                super::follow::refresh_local_endpoint(client)?;
            }
        }
    }
}

/// One connection: subscribe, then pass on what arrives until it drops.
async fn watch_once(
    client: &Client<'_>,
    on: &mut impl FnMut(SessionsUpdate),
    backoff: &mut super::backoff::Backoff,
) -> Dropped {
    let mut socket = match client.open_bus().await {
        Ok(s) => s,
        Err(d) => return d,
    };
    let subscribe = serde_json::json!({"type": "subscribe", "topics": ["sessions"]}).to_string();
    if let Err(e) = socket.send(Message::text(subscribe)).await {
        return Dropped::Retry(super::error_chain(&e));
    }
    let mut awaiting_pong = false;
    let mut quiet_until = tokio::time::Instant::now() + PING_EVERY;
    let mut tick = tokio::time::interval(TICK);
    loop {
        let next = tokio::select! {
            next = tokio::time::timeout_at(quiet_until, socket.next()) => next,
            _ = tick.tick() => {
                on(SessionsUpdate::Tick);
                continue;
            }
        };
        let frame = match next {
            Err(_) if awaiting_pong => {
                return Dropped::Retry(format!(
                    "the bus sent nothing for {}s",
                    2 * PING_EVERY.as_secs()
                ))
            }
            Err(_) => {
                awaiting_pong = true;
                quiet_until = tokio::time::Instant::now() + PING_EVERY;
                let ping = serde_json::json!({"type": "ping"}).to_string();
                if let Err(e) = socket.send(Message::text(ping)).await {
                    return Dropped::Retry(super::error_chain(&e));
                }
                continue;
            }
            Ok(None) => return Dropped::Retry("the bus connection ended".to_owned()),
            Ok(Some(Err(e))) => return Dropped::Retry(super::error_chain(&e)),
            Ok(Some(Ok(frame))) => frame,
        };
        awaiting_pong = false;
        quiet_until = tokio::time::Instant::now() + PING_EVERY;
        let text = match frame {
            Message::Text(t) => t,
            Message::Close(close) => return Dropped::Retry(closed_why(close)),
            _ => continue,
        };
        if let Some(dropped) = handle_text(client, &text, on, backoff) {
            return dropped;
        }
    }
}

/// Why the engine closed the bus, as the watcher says it before reconnecting.
fn closed_why(close: Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>) -> String {
    match close {
        Some(c) if c.code == CloseCode::from(CLOSE_FELL_BEHIND) => {
            format!(
                "the engine closed the bus: this watcher fell behind ({})",
                c.reason
            )
        }
        Some(c) => format!(
            "the engine closed the bus ({}: {})",
            u16::from(c.code),
            c.reason
        ),
        None => "the engine closed the bus".to_owned(),
    }
}

/// One text frame of the bus: a snapshot or a change of the sessions topic goes to `on`; an error on that topic
/// ends the watch (`Some`), any other is a warning.
fn handle_text(
    client: &Client<'_>,
    text: &str,
    on: &mut impl FnMut(SessionsUpdate),
    backoff: &mut super::backoff::Backoff,
) -> Option<Dropped> {
    let incoming = serde_json::from_str::<Incoming>(text).ok()?;
    match (incoming.kind.as_str(), incoming.topic.as_deref()) {
        ("snapshot", Some("sessions")) => {
            backoff.reset();
            let list = match incoming.payload {
                Value::Array(list) => list,
                _ => Vec::new(),
            };
            on(SessionsUpdate::Snapshot {
                raw: text.to_string(),
                list,
            });
        }
        ("event", Some("sessions")) => {
            if let Ok(change) = Change::deserialize(&incoming.payload) {
                on(SessionsUpdate::Change {
                    raw: text.to_string(),
                    change,
                });
            }
        }
        ("error", _) => {
            let why = incoming.message.unwrap_or_default();
            if incoming.topic.as_deref() == Some("sessions") {
                return Some(Dropped::Fatal(
                    CliError::new(
                        ErrorKind::Failure,
                        format!("the engine refused the sessions topic: {why}"),
                    )
                    .into(),
                ));
            }
            client.ctx.printer.warn(&format!("the bus says: {why}"));
        }
        _ => {}
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(kind: &str, id: &str, summary: Option<Value>, seq: Option<u64>) -> Change {
        Change {
            kind: kind.to_owned(),
            session_id: id.to_owned(),
            summary,
            last_seq: seq,
            last_activity_at: seq.map(|s| format!("t{s}")),
        }
    }

    #[test]
    fn changes_keep_a_snapshot_list_up_to_date() {
        let summary = |id: &str, status: &str| serde_json::json!({"session_id": id, "status": status, "last_seq": 0});
        let mut list = vec![summary("a", "idle"), summary("b", "idle")];
        change("created", "c", Some(summary("c", "idle")), None).apply_to(&mut list);
        change("status", "a", Some(summary("a", "running")), None).apply_to(&mut list);
        change("activity", "b", None, Some(7)).apply_to(&mut list);
        change("deleted", "c", None, None).apply_to(&mut list);
        // A change of a session the list does not have, without its summary, cannot be shown: ignored.
        change("activity", "zz", None, Some(3)).apply_to(&mut list);
        assert_eq!(
            list,
            vec![
                summary("a", "running"),
                serde_json::json!({"session_id": "b", "status": "idle", "last_seq": 7, "last_activity_at": "t7"}),
            ]
        );
    }
}
