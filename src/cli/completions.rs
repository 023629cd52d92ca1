//! `breadboard completions SHELL` prints a shell completion script, and the hidden `__man DIR` writes the man pages
//! (one per command) for the release tarball: both come from the clap definition the CLI itself parses with, so they
//! cannot drift from it.

use std::path::PathBuf;

use clap::CommandFactory;

use crate::printer::Printer;

#[derive(Debug, clap::Args)]
#[command(after_help = "Install, e.g.:\n  \
    bash: breadboard completions bash > ~/.local/share/bash-completion/completions/breadboard\n  \
    zsh:  breadboard completions zsh > ~/.zfunc/_breadboard   (with fpath+=~/.zfunc before compinit)\n  \
    fish: breadboard completions fish > ~/.config/fish/completions/breadboard.fish")]
pub struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Directory to write breadboard.1 and one page per subcommand into (created if missing)
    pub dir: PathBuf,
}

pub fn run(args: &CompletionsArgs) -> anyhow::Result<u8> {
    let mut out = std::io::stdout().lock();
    clap_complete::generate(
        args.shell,
        &mut super::Cli::command(),
        "breadboard",
        &mut out,
    );
    Ok(0)
}

pub fn run_man(printer: &Printer, args: &ManArgs) -> anyhow::Result<u8> {
    std::fs::create_dir_all(&args.dir)?;
    clap_mangen::generate_to(super::Cli::command(), &args.dir)?;
    printer.info(&format!("wrote the man pages into {}", args.dir.display()));
    Ok(0)
}
