//! Errors a user can act on.
//!
//! Bad *input* (a scenario key, a trace line, a measurement file) is an [`InputError`] naming the
//! file, the line or key, and the fix; `ppdsim` exits with code 3 for it. A broken simulator
//! invariant is a bug and panics instead.

use std::path::Path;
use thiserror::Error;

/// Exit code for success.
pub const EXIT_OK: i32 = 0;
/// Exit code for an unexpected error (I/O and the like).
pub const EXIT_ERROR: i32 = 1;
/// Exit code for a command-line usage error (clap's own).
pub const EXIT_USAGE: i32 = 2;
/// Exit code for an invalid input file (scenario, trace, measurements).
pub const EXIT_INVALID_INPUT: i32 = 3;

/// A problem with a user-supplied file.
#[derive(Debug, Error)]
#[error("{location}: {message}")]
pub struct InputError {
    /// The file, with `:line` or `: key` when known.
    pub location: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl InputError {
    /// An error about `path` as a whole.
    pub fn file(path: &Path, message: impl Into<String>) -> Self {
        InputError {
            location: path.display().to_string(),
            message: message.into(),
        }
    }

    /// An error about line `line` (1-based) of `path`.
    pub fn line(path: &Path, line: usize, message: impl Into<String>) -> Self {
        InputError {
            location: format!("{}:{}", path.display(), line),
            message: message.into(),
        }
    }

    /// An error about the value of command-line option `option` (`--shard`, `--set KEY=VALUE`):
    /// a usage error, exit code [`EXIT_USAGE`].
    pub fn option(option: &str, message: impl Into<String>) -> Self {
        debug_assert!(option.starts_with("--"), "options are named with their dashes");
        InputError {
            location: option.to_string(),
            message: message.into(),
        }
    }

    /// The exit code for this error: [`EXIT_USAGE`] for a bad option value (located at `--…`,
    /// see [`InputError::option`]), [`EXIT_INVALID_INPUT`] for a bad file.
    pub fn exit_code(&self) -> i32 {
        if self.location.starts_with("--") {
            EXIT_USAGE
        } else {
            EXIT_INVALID_INPUT
        }
    }

    /// An error about key `key` of `path`.
    pub fn key(path: &Path, key: &str, message: impl Into<String>) -> Self {
        InputError {
            location: format!("{} (key `{}`)", path.display(), key),
            message: message.into(),
        }
    }
}

/// Result with an [`InputError`].
pub type InputResult<T> = std::result::Result<T, InputError>;
