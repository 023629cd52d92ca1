//! `breadboard sessions list [--json] [--status S] [--watch]`: the engine's sessions, oldest first; `--watch` keeps
//! the list live over the realtime bus (`sessions_watch`).

use super::{ConnectArgs, Ctx};
use crate::client::{self, wire::Summary, StartPolicy};

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Print the engine's session summaries as a JSON array
    #[arg(long)]
    pub json: bool,
    /// Only sessions with this status (starting, running, completed, failed, stopped, interrupted)
    #[arg(long, value_name = "S")]
    pub status: Option<String>,
    /// Keep the list live (the engine's realtime bus): redrawn on a terminal, one JSON line per change on a pipe
    #[arg(long, conflicts_with = "json")]
    pub watch: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub fn run(ctx: &Ctx, args: &ListArgs) -> anyhow::Result<u8> {
    client::block_on(async {
        let mut c = client::connect(
            ctx,
            args.connect
                .connect(StartPolicy::FailFast, super::ask::DEFAULT_WAIT),
        )
        .await?;
        if args.watch {
            return super::sessions_watch::run(ctx, &mut c, args.status.as_deref()).await;
        }
        let mut all = c.list().await?;
        if let Some(s) = &args.status {
            all.retain(|v| v.get("status").and_then(|x| x.as_str()) == Some(s.as_str()));
        }
        if args.json {
            ctx.printer.json(&all);
            return Ok(0);
        }
        let rows: Vec<Summary> = all
            .into_iter()
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect();
        if rows.is_empty() {
            ctx.printer.info("no sessions");
            return Ok(0);
        }
        ctx.printer.result(&format!(
            "{:<36}  {:<11}  {:<20}  {:<20}  {:<20}  {:>8}",
            "ID", "STATUS", "PROVIDER/MODEL", "CREATED", "LAST ACTIVITY", "LAST SEQ"
        ));
        for s in rows {
            ctx.printer.result(&format!(
                "{:<36}  {:<11}  {:<20}  {:<20}  {:<20}  {:>8}",
                s.session_id,
                s.status,
                provider_model(&s),
                short_time(&s.created_at),
                short_time(s.last_activity_at.as_deref().unwrap_or("")),
                s.last_seq
            ));
        }
        Ok(0)
    })?
}

/// `echo`, `openai/gpt-4o-mini`, or `-`.
pub fn provider_model(s: &Summary) -> String {
    match (s.provider.as_deref(), s.model.as_deref()) {
        (Some(p), Some(m)) => format!("{p}/{m}"),
        (Some(p), None) => p.to_owned(),
        (None, Some(m)) => format!("default/{m}"),
        (None, None) => "default".to_owned(),
    }
}

/// `2026-11-23T12:28:18.123456Z` -> `2026-11-23 12:28:18`.
pub fn short_time(t: &str) -> String {
    let t = t.replacen('T', " ", 1);
    t.get(..19).map_or(t.clone(), str::to_owned)
}
