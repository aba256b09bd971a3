//! Writing outputs without ever touching a file ppdsim did not write.
//!
//! ## Result directories (`run`, `sweep`, `routing-map`, `plot`)
//! A result directory is either **new** (it does not exist, or is empty) or **ppdsim's**: it
//! holds a manifest, [`MANIFEST`], listing the files ppdsim wrote there. Anything else is refused
//! with a message; `--force` lets ppdsim write into a directory holding other files, but even
//! then it replaces or deletes only files its manifest lists, and refuses to write over any
//! other file.
//!
//! Files are first written into a staging directory (`.NAME.ppdsim-tmp-PID` beside a new
//! directory, `DIR/.ppdsim-tmp-PID` inside an existing one). A new directory is renamed into
//! place whole; into an existing one each file's old version is moved aside into the staging
//! directory and the new file renamed into its place (a file present is complete at every
//! instant; the old versions go with the staging directory), files of the old manifest that this
//! run did not write are removed, and the manifest is rewritten last.
//!
//! ## Single files (`calibrate -o`, `trace import -o`, `validate -o`)
//! [`write_atomic`] writes through a temporary file in the same directory and a rename. Before
//! any work, the command checks that it may replace each output: only a file that is
//! recognisably ppdsim output of the same kind ([`check_replaceable`]) or anything under
//! `--force`, and never one of the command's inputs ([`refuse_input_as_output`]).
//!
//! ## Temporary files
//! Every temporary file or directory is registered while it exists; on an error it is removed
//! (drop), on SIGINT/SIGTERM/SIGHUP the handler installed by [`install_signal_cleanup`] removes
//! all of them before exiting with 130. A run killed with SIGKILL cannot clean up: the next run
//! writing into the same place removes temporaries whose process is gone, and says so on stderr.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Name of the manifest file in every result directory ppdsim writes.
pub const MANIFEST: &str = ".ppdsim-manifest.json";

/// Infix of every temporary file or directory ppdsim creates: `.NAME.ppdsim-tmp-PID`.
pub const TMP_INFIX: &str = "ppdsim-tmp-";

/// The files ppdsim wrote into a result directory.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always `ppdsim`.
    pub generator: String,
    /// Version of ppdsim that wrote the directory last.
    pub version: String,
    /// Command that wrote it (`run`, `sweep`, `routing-map`).
    pub command: String,
    /// Paths relative to the directory, `/`-separated, sorted.
    pub files: BTreeSet<String>,
}

/// The temporary files and directories to remove on a signal; `None` once the signal handler
/// has taken them, after which no new one may be made.
static TEMPS: Mutex<Option<Vec<PathBuf>>> = Mutex::new(Some(Vec::new()));

fn temps() -> std::sync::MutexGuard<'static, Option<Vec<PathBuf>>> {
    TEMPS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Registers the temporary `p` and runs `make`, which creates it, under the lock the signal
/// handler takes: the handler either finds `p` registered once `make` is done, and removes it,
/// or has already run, and then `p` is not made (an error; the handler's exit, 130, follows).
/// Without the lock a signal between the creation and the registration left the temporary
/// behind.
///
/// # Errors
/// The process is being interrupted, or `make`'s error (`p` then stays registered, harmlessly).
fn make_registered<T>(p: &Path, make: impl FnOnce() -> Result<T>) -> Result<T> {
    let mut temps = temps();
    let Some(list) = temps.as_mut() else {
        anyhow::bail!("interrupted: {} not created", p.display());
    };
    list.push(p.to_path_buf());
    make()
}

fn unregister(p: &Path) {
    if let Some(list) = temps().as_mut() {
        list.retain(|q| q != p);
    }
}

fn remove_path(p: &Path) {
    if p.is_dir() {
        let _ = std::fs::remove_dir_all(p);
    } else {
        let _ = std::fs::remove_file(p);
    }
}

/// Removes every registered temporary file and directory (what the signal handler calls). The
/// other threads keep running meanwhile and may add a file under a directory being removed, so
/// each removal is retried (up to 50 × 2 ms) until the path is gone; they cannot recreate a
/// removed staging directory ([`OutputDir::path`] creates only its subdirectories).
pub fn remove_all_temps() {
    let list = temps().take().unwrap_or_default();
    for p in list {
        for _ in 0..50 {
            remove_path(&p);
            if std::fs::symlink_metadata(&p).is_err() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
}

/// Set by the signal handler before it removes anything.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// True once a SIGINT/SIGTERM/SIGHUP arrived: the handler is removing the temporary files and
/// will exit with 130.
pub fn interrupted() -> bool {
    INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst)
}

/// Ends the process with `code` — unless a signal arrived, in which case the handler's exit (130)
/// wins: an error this thread met meanwhile (a file it was writing vanished with the staging
/// directory) is the interruption's, and a run interrupted must not report 1. The wait is bounded
/// (5 s), then exits with 130 itself.
pub fn exit(code: i32) -> ! {
    if interrupted() {
        for _ in 0..50 {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        std::process::exit(130);
    }
    std::process::exit(code)
}

/// Installs a SIGINT/SIGTERM/SIGHUP handler that removes ppdsim's temporary files and exits with
/// code 130. Call once, at startup; end the process with [`exit`], which defers to it.
///
/// # Errors
/// When a handler is already installed.
pub fn install_signal_cleanup() -> Result<()> {
    ctrlc::set_handler(|| {
        INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
        remove_all_temps();
        eprintln!("interrupted: temporary files removed, nothing written");
        std::process::exit(130);
    })
    .context("installing the signal handler")
}

/// The temporary name of `name` for this process: `.NAME.ppdsim-tmp-PID`.
fn tmp_name(name: &str) -> String {
    format!(".{name}.{TMP_INFIX}{}", std::process::id())
}

/// True when process `pid` no longer exists (a temporary it left is stale).
fn process_gone(pid: u32) -> bool {
    #[cfg(unix)]
    {
        if pid == std::process::id() {
            return false;
        }
        // SAFETY: kill with signal 0 only checks whether the process exists.
        let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
        r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        false
    }
}

/// Removes ppdsim temporaries in `dir` whose names start with `prefix` (e.g. `.NAME.`) and whose
/// process is gone; reports each on stderr.
fn clean_stale(dir: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(prefix) else {
            continue;
        };
        let Some(pid) = rest.strip_prefix(TMP_INFIX).and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if process_gone(pid) {
            remove_path(&e.path());
            eprintln!(
                "note: removed {}, left by an interrupted ppdsim run (process {pid})",
                e.path().display()
            );
        }
    }
}

/// Whether [`OutputDir::create`] for `dest` would make no folder but its staging one: the
/// folder `dest` goes in exists (`ppdsim run`'s fast path stages only then, since on an error
/// found later the ordinary path must not have made the parents first).
pub fn parent_exists(dest: &Path) -> bool {
    parent_of(dest).is_dir()
}

/// The directory a path lives in (`.` for a bare name).
fn parent_of(p: &Path) -> &Path {
    p.parent()
        .filter(|q| !q.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn read_manifest(dir: &Path) -> Result<Option<Manifest>> {
    let p = dir.join(MANIFEST);
    if !p.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    let m: Manifest = serde_json::from_str(&text).map_err(|e| {
        anyhow::Error::new(crate::error::InputError::file(
            &p,
            format!("not a ppdsim manifest ({e}); remove it only if you know the directory's files are ppdsim's"),
        ))
    })?;
    Ok(Some(m))
}

/// A registered temporary directory, removed when dropped (unless it was renamed away first).
pub struct Staging {
    path: PathBuf,
}

impl Staging {
    /// Creates (anew) the temporary directory `path` and registers it for cleanup.
    fn at(path: PathBuf) -> Result<Self> {
        if path.exists() {
            remove_path(&path);
        }
        make_registered(&path, || {
            std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))
        })?;
        Ok(Staging { path })
    }

    /// A temporary directory `.NAME.ppdsim-tmp-PID` beside `target` (stale ones of killed runs
    /// removed first), for files that will be renamed onto `target` or beside it.
    ///
    /// # Errors
    /// `target` has no file name; I/O errors creating the directory.
    pub fn beside(target: &Path) -> Result<Self> {
        let name = target
            .file_name()
            .ok_or_else(|| refuse(target, "not a file or directory name".into()))?
            .to_string_lossy()
            .into_owned();
        let parent = parent_of(target);
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        clean_stale(parent, &format!(".{name}."));
        Self::at(parent.join(tmp_name(&name)))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // Still present only on error paths (a committed directory was renamed away).
        if self.path.exists() {
            remove_path(&self.path);
        }
        unregister(&self.path);
    }
}

/// A result directory being written; [`OutputDir::commit`] puts the files in place.
pub struct OutputDir {
    dest: PathBuf,
    staging: Staging,
    command: String,
    /// `Some` when `dest` already existed: the files its manifest lists (empty without one).
    existing: Option<BTreeSet<String>>,
}

/// How [`OutputDir::commit`] treats files of the old manifest that this run did not write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stale {
    /// Remove them, and the folders they leave empty (a new run's results replace the old
    /// run's).
    Remove,
    /// Keep them (`plot` redraws some files of a directory).
    Keep,
}

/// An error about the output directory the user named.
fn refuse(dest: &Path, message: String) -> anyhow::Error {
    anyhow::Error::new(crate::error::InputError::file(dest, message))
}

impl OutputDir {
    /// Starts writing the result directory `dest` for `command`.
    ///
    /// # Errors
    /// `dest` exists and is not a directory; `dest` is a non-empty directory without a ppdsim
    /// manifest and `force` is false; I/O errors creating the staging directory.
    pub fn create(dest: &Path, force: bool, command: &str) -> Result<Self> {
        let existing = if dest.exists() {
            if !dest.is_dir() {
                return Err(refuse(
                    dest,
                    "exists and is not a directory; give a directory name with -o".into(),
                ));
            }
            clean_stale(dest, ".");
            let manifest = read_manifest(dest)?;
            let files = manifest.map(|m| m.files).unwrap_or_default();
            if files.is_empty() && !force {
                let foreign: Vec<String> = std::fs::read_dir(dest)
                    .with_context(|| format!("listing {}", dest.display()))?
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n != MANIFEST)
                    .collect();
                if !foreign.is_empty() {
                    return Err(refuse(
                        dest,
                        format!(
                            "exists and holds files ppdsim did not write ({}{}); ppdsim writes only into a new directory or one it wrote before (with {MANIFEST}). Choose another -o, or pass --force to add ppdsim's files beside them (no existing file is replaced or deleted)",
                            foreign.iter().take(3).cloned().collect::<Vec<_>>().join(", "),
                            if foreign.len() > 3 { ", …" } else { "" }
                        ),
                    ));
                }
            }
            Some(files)
        } else {
            None
        };
        let staging = match &existing {
            Some(_) => Staging::at(dest.join(format!(".{TMP_INFIX}{}", std::process::id())))?,
            None => Staging::beside(dest)?,
        };
        Ok(OutputDir {
            dest: dest.to_path_buf(),
            staging,
            command: command.to_string(),
            existing,
        })
    }

    /// Opens an existing result directory to add or replace some of its files (`plot`).
    ///
    /// # Errors
    /// `dir` is not a directory, or holds no ppdsim manifest and `force` is false.
    pub fn open_existing(dir: &Path, force: bool, command: &str) -> Result<Self> {
        if !dir.is_dir() {
            return Err(refuse(
                dir,
                "not a directory; give a directory written by `ppdsim run`, `sweep` or `routing-map`".into(),
            ));
        }
        if read_manifest(dir)?.is_none() && !force {
            return Err(refuse(
                dir,
                format!("holds no {MANIFEST}: it was not written by this version of ppdsim. Re-run the command that made it, or pass --force to draw beside its files (no file ppdsim did not write is replaced)"),
            ));
        }
        Self::create(dir, true, command)
    }

    /// The directory being written (as given).
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Path of `rel` inside the staging directory (its parent directories inside the staging
    /// directory created; never the staging directory itself, so a run interrupted while the
    /// signal handler removes it cannot bring it back).
    ///
    /// # Errors
    /// When a parent directory cannot be created (or the staging directory is gone).
    pub fn path(&self, rel: &str) -> Result<PathBuf> {
        let p = self.staging.path.join(rel);
        let mut dir = self.staging.path.clone();
        let parents: Vec<_> = Path::new(rel)
            .parent()
            .map(|d| d.components().collect())
            .unwrap_or_default();
        for c in parents {
            dir.push(c);
            match std::fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {}
                Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
            }
        }
        Ok(p)
    }

    /// Writes `bytes` to `rel`.
    ///
    /// # Errors
    /// I/O errors.
    pub fn write(&self, rel: &str, bytes: &[u8]) -> Result<()> {
        let p = self.path(rel)?;
        std::fs::write(&p, bytes).with_context(|| format!("writing {}", p.display()))
    }

    /// Staged files, relative and `/`-separated, sorted.
    fn staged_files(&self) -> Result<BTreeSet<String>> {
        let mut out = BTreeSet::new();
        let mut stack = vec![self.staging.path.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).with_context(|| format!("listing {}", d.display()))? {
                let p = e?.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let rel = p.strip_prefix(&self.staging.path).expect("under staging");
                    out.insert(
                        rel.components()
                            .map(|c| c.as_os_str().to_string_lossy().into_owned())
                            .collect::<Vec<_>>()
                            .join("/"),
                    );
                }
            }
        }
        out.remove(MANIFEST);
        Ok(out)
    }

    /// Puts the staged files in place and writes the manifest; returns how many files were
    /// written.
    ///
    /// # Errors
    /// A staged file would replace a file ppdsim did not write (nothing is moved then), or I/O
    /// errors.
    pub fn commit(self, stale: Stale) -> Result<usize> {
        let files = self.staged_files()?;
        let manifest = |files: BTreeSet<String>| -> Result<Vec<u8>> {
            let mut v = serde_json::to_vec_pretty(&Manifest {
                generator: "ppdsim".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                command: self.command.clone(),
                files,
            })?;
            v.push(b'\n');
            Ok(v)
        };
        match &self.existing {
            None => {
                std::fs::write(self.staging.path.join(MANIFEST), manifest(files.clone())?)?;
                std::fs::rename(&self.staging.path, &self.dest)
                    .with_context(|| format!("moving results into {}", self.dest.display()))?;
            }
            Some(old) => {
                // Check every target first: nothing moves if one would replace a foreign file.
                for rel in &files {
                    let target = self.dest.join(rel);
                    // One look at the target (as `exists` and `is_dir` follow a link, so does this).
                    let found = std::fs::metadata(&target).ok();
                    if found.is_some() && !old.contains(rel) {
                        bail!(refuse(
                            &target,
                            "exists and was not written by ppdsim; move it away or choose another -o (not replaced, nothing written)".into()
                        ));
                    }
                    if found.is_some_and(|m| m.is_dir()) {
                        bail!(refuse(
                            &target,
                            "is a directory where ppdsim writes a file; nothing written".into()
                        ));
                    }
                }
                self.move_into_place(&files)?;
                let replaced = self.staging.path.join(REPLACED);
                std::thread::scope(|s| self.finish_existing(old, &files, stale, &replaced, s, &manifest))?;
            }
        }
        // The staging directory (renamed into place, or emptied) goes when `self` drops.
        Ok(files.len())
    }

    /// The rest of a commit into an existing result directory, once `files` are in place:
    /// deletes the files they replaced (moved into `replaced`) on a thread of `scope`, and
    /// meanwhile removes (or, with [`Stale::Keep`], keeps) the files of the `old` manifest this
    /// run did not write and writes the new manifest. Freeing a large file's blocks takes ext4 a
    /// while: Vidur's run replacing its own results took 0.6–0.8 ms to delete the old files
    /// (most of it `requests.csv`'s 1.5 MB) and ≈ 0.45 ms for the rest, one after the other
    /// (temporary timers, 2026-12-07).
    ///
    /// # Errors
    /// I/O errors removing a stale file or writing the manifest.
    fn finish_existing<'s>(
        &self,
        old: &BTreeSet<String>,
        files: &BTreeSet<String>,
        stale: Stale,
        replaced: &'s Path,
        scope: &'s std::thread::Scope<'s, '_>,
        manifest: &dyn Fn(BTreeSet<String>) -> Result<Vec<u8>>,
    ) -> Result<()> {
        if replaced.exists() {
            scope.spawn(move || {
                let _ = std::fs::remove_dir_all(replaced);
            });
        }
        let mut kept = files.clone();
        // Folders that held a removed file, deepest first.
        let mut emptied = BTreeSet::new();
        for rel in old.difference(files) {
            let p = self.dest.join(rel);
            match stale {
                Stale::Remove => {
                    if p.is_file() {
                        std::fs::remove_file(&p).with_context(|| format!("removing old {}", p.display()))?;
                        emptied.extend(
                            Path::new(rel)
                                .ancestors()
                                .skip(1)
                                .filter(|a| !a.as_os_str().is_empty())
                                .map(Path::to_path_buf),
                        );
                    }
                }
                Stale::Keep => {
                    if p.is_file() {
                        kept.insert(rel.clone());
                    }
                }
            }
        }
        // A folder left empty goes too (`plots/` after a run with `--no-plots`); one that
        // still holds anything, the user's files included, stays: `remove_dir` refuses it.
        for dir in emptied.iter().rev() {
            let _ = std::fs::remove_dir(self.dest.join(dir));
        }
        write_atomic(&self.dest.join(MANIFEST), &manifest(kept)?)
    }

    /// Renames each staged file in `files` onto its place in an existing result directory.
    ///
    /// A file already there is first moved aside, into [`REPLACED`] under the staging directory
    /// (removed with it), so the rename that puts the new file in place replaces nothing.
    /// Renaming over a file makes ext4 (`auto_da_alloc`) allocate and start writing back the new
    /// file's data, and free the old file's blocks, inside that rename: ≈ 1 s for a 1.8 GB
    /// `requests.csv` against ≈ 0.35 s to unlink the old one afterwards (docs/performance.md).
    /// The signal handler waits for the moves (they hold the lock it takes), so an interrupted
    /// run never leaves a file missing; should a rename fail, the old file is moved back before
    /// the error is returned.
    ///
    /// # Errors
    /// I/O errors creating a folder or renaming.
    fn move_into_place(&self, files: &BTreeSet<String>) -> Result<()> {
        let aside_root = self.staging.path.join(REPLACED);
        let _handler_waits = temps();
        // Folders made (or found) so far: each is made once, not once per file in it (two
        // system calls each time it is found).
        let mut made: BTreeSet<PathBuf> = BTreeSet::new();
        let mut make = |dir: &Path| -> Result<()> {
            if !made.contains(dir) {
                std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
                made.insert(dir.to_path_buf());
            }
            Ok(())
        };
        for rel in files {
            let target = self.dest.join(rel);
            if let Some(parent) = target.parent() {
                make(parent)?;
            }
            let aside = if target.is_file() {
                let aside = aside_root.join(rel);
                make(parent_of(&aside))?;
                std::fs::rename(&target, &aside)
                    .with_context(|| format!("moving the old {} aside", target.display()))?;
                Some(aside)
            } else {
                None
            };
            if let Err(e) = std::fs::rename(self.staging.path.join(rel), &target) {
                if let Some(aside) = aside {
                    let _ = std::fs::rename(aside, &target);
                }
                return Err(e).with_context(|| format!("moving {} into place", target.display()));
            }
        }
        Ok(())
    }
}

/// Folder of a staging directory that holds the files a commit replaced, until the staging
/// directory is removed ([`OutputDir::move_into_place`]); no staged file has this name.
const REPLACED: &str = ".ppdsim-replaced";

/// Writes `bytes` to `path` through a registered temporary file and a rename, so `path` is
/// never half-written. It checks nothing: callers decide first whether `path` may be replaced
/// ([`check_replaceable`], [`refuse_input_as_output`]).
///
/// # Errors
/// `path` has no file name; I/O errors.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let parent = parent_of(path);
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let name = path
        .file_name()
        .ok_or_else(|| refuse(path, "not a file name".into()))?
        .to_string_lossy()
        .into_owned();
    clean_stale(parent, &format!(".{name}."));
    let tmp = parent.join(tmp_name(&name));
    // Written and renamed under the handler's lock: a signal finds either no temporary or the
    // file in place.
    let r = make_registered(&tmp, || {
        let r = std::fs::write(&tmp, bytes)
            .with_context(|| format!("writing {}", tmp.display()))
            .and_then(|_| std::fs::rename(&tmp, path).with_context(|| format!("renaming onto {}", path.display())));
        if r.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        r
    });
    unregister(&tmp);
    r
}

/// Checks that writing `path` may replace what is there: nothing, a directory-free path, a file
/// `is_ours` recognises as ppdsim output of the right kind, or anything under `force`.
///
/// # Errors
/// `path` is a directory, or an existing file that `is_ours` rejects without `force`.
pub fn check_replaceable(path: &Path, force: bool, what: &str, is_ours: &dyn Fn(&Path) -> bool) -> Result<()> {
    if path.is_dir() {
        return Err(refuse(path, format!("is a directory; give a file name for the {what}")));
    }
    if path.exists() && !force && !is_ours(path) {
        return Err(refuse(
            path,
            format!("exists and is not a {what} written by ppdsim; choose another -o, or pass --force to replace it"),
        ));
    }
    Ok(())
}

/// True when the existing file at `path` starts with the same first line as `bytes` (a CSV with
/// the same header: ppdsim's own table of that kind).
pub fn same_first_line(path: &Path, bytes: &[u8]) -> bool {
    use std::io::{BufRead, Read};
    let want = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let Ok(f) = std::fs::File::open(path) else {
        return false;
    };
    let mut line = Vec::new();
    let mut r = std::io::BufReader::new(f).take(1 << 16);
    if r.read_until(b'\n', &mut line).is_err() {
        return false;
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    !want.is_empty() && line == want
}

/// True when `a` and `b` name the same existing file (same device and inode on Unix, same
/// canonical path elsewhere).
pub fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        match (std::fs::metadata(a), std::fs::metadata(b)) {
            (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
            _ => false,
        }
    }
    #[cfg(not(unix))]
    {
        match (a.canonicalize(), b.canonicalize()) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        }
    }
}

/// Refuses an output that is one of the command's inputs.
///
/// # Errors
/// One of `outputs` is the same file as one of `inputs`.
pub fn refuse_input_as_output(outputs: &[&Path], inputs: &[PathBuf]) -> Result<()> {
    for o in outputs {
        if let Some(i) = inputs.iter().find(|i| same_file(o, i)) {
            return Err(refuse(
                o,
                format!(
                    "is also an input ({}); writing it would destroy the input: choose another -o",
                    i.display()
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmp_names_carry_the_pid() {
        let n = tmp_name("out");
        assert_eq!(n, format!(".out.ppdsim-tmp-{}", std::process::id()));
        assert!(!process_gone(std::process::id()));
    }

    /// Every entry under `dir`, relative, sorted, with each file's contents.
    fn listing(dir: &Path) -> Vec<(String, Option<Vec<u8>>)> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                if p.is_dir() {
                    stack.push(p);
                    out.push((rel, None));
                } else {
                    out.push((rel, Some(std::fs::read(&p).unwrap())));
                }
            }
        }
        out.sort();
        out
    }

    /// `dest` as a first `run` leaves it with `files` (relative path, contents).
    fn first_run(dest: &Path, files: &[(&str, &[u8])]) {
        let first = OutputDir::create(dest, false, "run").unwrap();
        for (rel, bytes) in files {
            first.write(rel, bytes).unwrap();
        }
        first.commit(Stale::Remove).unwrap();
    }

    #[test]
    fn a_commit_over_a_previous_run_replaces_its_files_and_leaves_no_old_version_behind() {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("out");
        first_run(
            &dest,
            &[
                ("requests.csv", b"old rows\n"),
                ("plots/a.svg", b"old plot"),
                ("gone.csv", b"not written again"),
            ],
        );
        std::fs::write(dest.join("notes.txt"), b"mine").unwrap();

        let second = OutputDir::create(&dest, false, "run").unwrap();
        second.write("requests.csv", b"new rows\n").unwrap();
        second.write("plots/a.svg", b"new plot").unwrap();
        second.write("plots/b.svg", b"another").unwrap();
        assert_eq!(second.commit(Stale::Remove).unwrap(), 3);
        let manifest = std::fs::read(dest.join(MANIFEST)).unwrap();
        let file = |bytes: &[u8]| Some(bytes.to_vec());
        // The new versions only: no staging folder, no old version moved aside, the stale file
        // gone, the user's file kept.
        assert_eq!(
            listing(&dest),
            [
                (MANIFEST.to_string(), Some(manifest)),
                ("notes.txt".into(), file(b"mine")),
                ("plots".into(), None),
                ("plots/a.svg".into(), file(b"new plot")),
                ("plots/b.svg".into(), file(b"another")),
                ("requests.csv".into(), file(b"new rows\n")),
            ]
        );
    }

    #[test]
    fn a_rename_that_fails_after_the_old_file_went_aside_puts_it_back() {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("out");
        first_run(&dest, &[("requests.csv", b"old rows\n")]);
        let second = OutputDir::create(&dest, false, "run").unwrap();
        // Listed but never staged: its rename fails once the old file is aside.
        let err = second
            .move_into_place(&["requests.csv".to_string()].into_iter().collect())
            .unwrap_err();
        // The old file went aside; the new one could not follow: its rename's error.
        assert!(format!("{err:#}").contains("into place"), "{err:#}");
        assert_eq!(std::fs::read(dest.join("requests.csv")).unwrap(), b"old rows\n");
    }
}
