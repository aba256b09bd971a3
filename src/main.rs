//! `ppdsim` binary: parse, run, map errors to exit codes.

use clap::Parser;
use ppdsim::error::{InputError, EXIT_ERROR};

fn main() {
    // Exit quietly when the reader of stdout goes away (`ppdsim ... | head`), as Unix tools do,
    // instead of panicking in `println!` on the broken pipe (Rust ignores SIGPIPE by default).
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE at startup, before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = ppdsim::cli::Cli::parse();
    // SIGINT/SIGTERM/SIGHUP remove ppdsim's temporary files before exiting (130).
    if let Err(e) = ppdsim::outdir::install_signal_cleanup() {
        eprintln!("warning: {e:#}");
    }
    let code = match ppdsim::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            // After a signal the error is the interruption's (the handler says so and exits 130).
            if !ppdsim::outdir::interrupted() {
                eprintln!("error: {e:#}");
            }
            // A bad option value is a usage error (2), a bad file an invalid input (3).
            e.downcast_ref::<InputError>().map_or(EXIT_ERROR, InputError::exit_code)
        }
    };
    ppdsim::outdir::exit(code);
}
