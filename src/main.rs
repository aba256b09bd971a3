//! `ppdsim` binary: parse, run, map errors to exit codes.

use clap::Parser;
use ppdsim::error::{InputError, EXIT_ERROR, EXIT_INVALID_INPUT};

fn main() {
    let cli = ppdsim::cli::Cli::parse();
    match ppdsim::cli::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            let code = if e.downcast_ref::<InputError>().is_some() {
                EXIT_INVALID_INPUT
            } else {
                EXIT_ERROR
            };
            std::process::exit(code);
        }
    }
}
