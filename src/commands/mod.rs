//! The body of each command: `cli` parses the command line and dispatches here, one module per
//! command.

pub mod calibrate;
pub mod feed;
pub mod plot;
pub mod routing_map;
pub mod run;
pub mod sweep;
pub mod trace;
pub mod validate;

/// A progress bar on stderr with a label, the count and an ETA (hidden when `quiet`).
pub(crate) fn progress_bar(quiet: bool, len: u64, label: &str) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    // `with_message`, not `set_message`: nothing is drawn before the first advance (a bar whose
    // length is set later would show 0/0).
    let bar = indicatif::ProgressBar::new(len).with_message(label.to_string());
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({elapsed} elapsed, ETA {eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}
