//! One connection to a session's event stream: the request that resumes after the last seq delivered, each event's
//! head read and deduplicated by seq before the caller sees it, and what a Ctrl-C does meanwhile.

use std::time::{Duration, Instant};

use futures_util::StreamExt;

use super::{Attempt, Ended, Flow, FollowOpts, OnInterrupt, Start, State};
use crate::client::wire::{Head, Incoming};
use crate::client::{About, ApiError, Client};

/// The type of the session's last event (one replayed event: `replay=true&limit=1`).
pub(super) async fn last_kind(client: &Client<'_>, id: &str) -> anyhow::Result<Option<String>> {
    let req = client
        .request(
            reqwest::Method::GET,
            &format!("/v1/sessions/{id}/events?replay=true&limit=1"),
        )
        .header("Accept", "text/event-stream");
    let resp = client
        .send(req)
        .await
        .map_err(|e| client.error(e, About::Session(id)))?;
    let mut events = std::pin::pin!(sse_events(resp));
    while let Some(Ok(ev)) = events.next().await {
        if let Some(Ok(head)) = ev.data.as_deref().map(serde_json::from_str::<Head>) {
            return Ok(Some(head.kind.into_owned()));
        }
    }
    Ok(None)
}

/// The body's SSE events. sse-stream parses each socket read in place (memchr for line ends, no copy of what
/// follows), so a read holding thousands of replayed events costs linear time.
fn sse_events(
    resp: reqwest::Response,
) -> sse_stream::SseByteStream<
    impl futures_util::TryStream<Ok = bytes::Bytes, Error = reqwest::Error>,
> {
    sse_stream::SseByteStream::new(resp.bytes_stream())
}

/// One connection: replays from the resume point, then reads live events until it ends.
pub(super) async fn attempt<F>(
    client: &Client<'_>,
    id: &str,
    opts: &FollowOpts,
    st: &mut State,
    on_event: &mut F,
) -> anyhow::Result<Result<Attempt, ApiError>>
where
    F: FnMut(&Incoming<'_>) -> anyhow::Result<Flow>,
{
    let resp = tokio::select! {
        r = client.send(stream_request(client, id, opts, st)) => r,
        _ = st.sigint.recv() => {
            st.interrupts += 1;
            if let Some(ended) = interrupted(client, id, opts, st).await { return Ok(Ok(Attempt::Finished(ended))); }
            return Ok(Ok(Attempt::Lost));
        }
    };
    let resp = match resp {
        Ok(r) => r,
        Err(e) => return Ok(Err(e)),
    };
    let mut events = std::pin::pin!(sse_events(resp));
    loop {
        let stop_wait = st
            .stop_deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(3600 * 24 * 365));
        // Whatever is ready is handled first; printed lines are written out before waiting for more.
        let ready = futures_util::FutureExt::now_or_never(events.next());
        if ready.is_none() {
            crate::client::render::flush();
        }
        let item = if let Some(item) = ready {
            item
        } else {
            tokio::select! {
                item = events.next() => item,
                _ = st.sigint.recv() => {
                    st.interrupts += 1;
                    if let Some(ended) = interrupted(client, id, opts, st).await { return Ok(Ok(Attempt::Finished(ended))); }
                    continue;
                }
                _ = tokio::time::sleep(stop_wait) => return Ok(Ok(Attempt::Finished(Ended::Interrupted))),
            }
        };
        let ev = match item {
            Some(Ok(ev)) => ev,
            Some(Err(_)) | None => return Ok(Ok(Attempt::Lost)),
        };
        // A block without data (a comment, a keep-alive, a lone `retry:`) is no event.
        let Some(data) = ev.data.as_deref().filter(|d| !d.is_empty()) else {
            continue;
        };
        let sse_seq = ev.id.as_deref().and_then(|id| id.parse::<u64>().ok());
        if let Some(ended) = deliver(client, st, data, sse_seq, on_event)? {
            return Ok(Ok(Attempt::Finished(ended)));
        }
    }
}

/// The stream's request: from the resume point (`Last-Event-ID`: the last seq delivered, or `--from-seq`), or the
/// last N events (`--tail`) on the first connection.
fn stream_request(
    client: &Client<'_>,
    id: &str,
    opts: &FollowOpts,
    st: &State,
) -> reqwest::RequestBuilder {
    let path = match (st.last, opts.start) {
        (None, Start::Tail(n)) => format!("/v1/sessions/{id}/events?replay=true&limit={n}"),
        _ => format!("/v1/sessions/{id}/events"),
    };
    let req = client
        .request(reqwest::Method::GET, &path)
        .header("Accept", "text/event-stream");
    let resume = match (st.last, opts.start) {
        (Some(s), _) => Some(s),
        (None, Start::After(n)) => Some(n),
        (None, Start::Tail(_)) => None,
    };
    match resume {
        Some(s) => req.header("Last-Event-ID", s.to_string()),
        None => req,
    }
}

/// One event's data (`sse_seq`: its SSE id, which is its seq too): read its head, drop a repeat, hand it to the
/// caller, move the resume point. `Some` when the follow ends with it.
fn deliver<F>(
    client: &Client<'_>,
    st: &mut State,
    data: &str,
    sse_seq: Option<u64>,
    on_event: &mut F,
) -> anyhow::Result<Option<Ended>>
where
    F: FnMut(&Incoming<'_>) -> anyhow::Result<Flow>,
{
    let Ok(head) = serde_json::from_str::<Head>(data) else {
        client.ctx.printer.warn(&format!(
            "skipped an event that is not a protocol 1.0 envelope: {}",
            data.chars().take(200).collect::<String>()
        ));
        // An event the client cannot read still moves the resume point past it, or a closed session's stream
        // would be resumed before it, forever.
        if let Some(seq) = sse_seq.filter(|s| st.last.is_none_or(|l| *s > l)) {
            st.last = Some(seq);
        }
        return Ok(None);
    };
    let seq = head.seq.or(sse_seq);
    if seq.is_some_and(|seq| st.last.is_some_and(|l| seq <= l)) {
        return Ok(None);
    }
    let finished = head.kind == "run_finished";
    let flow = on_event(&Incoming {
        seq,
        kind: head.kind,
        raw: data,
    })?;
    if let Some(seq) = seq {
        st.last = Some(seq);
    }
    st.last_finished = finished;
    Ok(if flow == Flow::Stop {
        Some(if st.stop_deadline.is_some() {
            Ended::Interrupted
        } else {
            Ended::Done
        })
    } else if finished && st.stop_deadline.is_some() {
        Some(Ended::Interrupted)
    } else if st
        .idle_at
        .is_some_and(|target| st.last.unwrap_or(0) >= target && st.last_finished)
    {
        Some(Ended::Done)
    } else {
        None
    })
}

/// A Ctrl-C: `Some` when the follow ends now.
pub(super) async fn interrupted(
    client: &Client<'_>,
    id: &str,
    opts: &FollowOpts,
    st: &mut State,
) -> Option<Ended> {
    if opts.on_interrupt == OnInterrupt::Detach || st.interrupts > 1 {
        return Some(Ended::Interrupted);
    }
    client
        .ctx
        .printer
        .info("stopping the turn (Ctrl-C again to quit at once)");
    // Only a turn the engine says it stopped is waited for; print what arrives until it ends.
    // A second Ctrl-C while the stop request is out quits at once, whatever the engine does with it.
    let answer = tokio::select! {
        answer = client.command(id, "stop", serde_json::json!({})) => answer,
        _ = st.sigint.recv() => {
            st.interrupts += 1;
            return Some(Ended::Interrupted);
        }
    };
    match answer {
        Ok(detail) if detail.stopped == Some(true) => {
            st.stop_deadline = Some(Instant::now() + Duration::from_secs(5));
            None
        }
        _ => Some(Ended::Interrupted),
    }
}
