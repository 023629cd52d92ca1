//! `breadboard __supervise` (hidden): parses the supervisor's arguments and runs it (`crate::supervisor`).

#[derive(Debug, clap::Args)]
pub struct SuperviseArgs {
    /// Inherited listening socket to hand to the engine
    #[arg(long)]
    pub listen_fd: Option<i32>,
    /// Restart policy: no | on-failure
    #[arg(long, default_value = "no")]
    pub restart: String,
    /// The engine command
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

pub fn run(args: &SuperviseArgs) -> anyhow::Result<u8> {
    crate::supervisor::run_detached(&args.command, args.listen_fd, &args.restart)
}
