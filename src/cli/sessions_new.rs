//! `breadboard sessions new`: an idle interactive session; prints its id.

use super::{ConnectArgs, Ctx};
use crate::client::{self, state, StartPolicy};

#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// Provider of the session (echo, openai, replay; the engine's default otherwise)
    #[arg(long, value_name = "P")]
    pub provider: Option<String>,
    /// Model of the session (metadata.model)
    #[arg(long, value_name = "M")]
    pub model: Option<String>,
    /// Print the engine's answer as JSON
    #[arg(long)]
    pub json: bool,
    /// Fail instead of starting the local engine when it is not running
    #[arg(long)]
    pub no_start: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

pub fn run(ctx: &Ctx, args: &NewArgs) -> anyhow::Result<u8> {
    let start = StartPolicy::unless(args.no_start);
    client::block_on(async {
        let c = client::connect(ctx, args.connect.connect(start, super::ask::DEFAULT_WAIT)).await?;
        let created = create_idle(&c, args.provider.as_deref(), args.model.as_deref()).await?;
        state::remember(&ctx.paths, &c.endpoint, &created.session_id);
        if args.json {
            ctx.printer.json(&serde_json::json!({
                "session_id": created.session_id,
                "status": created.status,
            }));
        } else {
            ctx.printer.result(&created.session_id);
        }
        Ok(0)
    })?
}

/// A new idle interactive session (an empty task starts it waiting for input).
pub async fn create_idle(
    c: &client::Client<'_>,
    provider: Option<&str>,
    model: Option<&str>,
) -> anyhow::Result<client::wire::Created> {
    let mut meta = serde_json::json!({});
    if let Some(m) = model {
        meta["model"] = m.into();
    }
    c.create("", provider, meta).await
}
