use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = breadboard::cli::Cli::parse();
    let printer = cli.printer();
    match breadboard::cli::run(cli, &printer) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            let (code, hint) = breadboard::error::classify(&err);
            printer.error(&err, hint);
            ExitCode::from(code)
        }
    }
}
