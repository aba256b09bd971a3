//! The bad-input corpus (`tests/data/invalid/`, written by its `generate.py`): every file is fed
//! to the command that reads it, in a scratch directory, and must give a clear error — exit code 3
//! (or 2 for a usage error), a message naming the file, no panic — and leave no file behind. The
//! message of each is an insta snapshot (`tests/it/snapshots/`), so a changed message is reviewed.

use assert_cmd::Command;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The command line that reads a corpus file of `kind`, writing (if at all) under `scratch`.
fn command_for(kind: &str, file: &Path, scratch: &Path) -> Vec<String> {
    let f = file.display().to_string();
    let out = scratch.join("out").display().to_string();
    let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    match kind {
        "scenarios" => v(&["run", &f, "-o", &out, "-q"]),
        "sweeps" => v(&["sweep", &f, "-o", &out, "-q"]),
        "traces" => v(&["trace", "stats", &f]),
        "import-sharegpt" => v(&["trace", "import", "sharegpt", &f, "-o", &format!("{out}.jsonl")]),
        "import-mooncake" => v(&["trace", "import", "mooncake", &f, "-o", &format!("{out}.jsonl")]),
        "import-azure" => v(&["trace", "import", "azure", &f, "-o", &format!("{out}.jsonl")]),
        "import-vidur" => v(&["trace", "import", "vidur", &f, "-o", &format!("{out}.jsonl")]),
        "measurements" => v(&["calibrate", &f, "-o", &format!("{out}.json")]),
        "models" => v(&["routing-map", "-c", &f, "-o", &out]),
        other => panic!("corpus kind {other} has no command"),
    }
}

/// `text` with the machine's paths replaced by placeholders (snapshots hold none).
fn normalise(text: &str, scratch: &Path) -> String {
    text.replace(&scratch.display().to_string(), "[SCRATCH]")
        .replace(&root().display().to_string(), "[ROOT]")
}

#[test]
fn every_bad_input_is_refused_with_its_message_and_leaves_nothing() {
    let corpus = root().join("tests/data/invalid");
    let mut kinds: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    kinds.sort();
    let mut count = 0;
    for dir in kinds {
        let kind = dir.file_name().unwrap().to_string_lossy().into_owned();
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        for file in files {
            let name = file.file_name().unwrap().to_string_lossy().into_owned();
            if kind == "scenarios" && name.ends_with(".jsonl") {
                continue; // a trace a scenario of the corpus refers to
            }
            let before = std::fs::read(&file).unwrap();
            let scratch = tempfile::tempdir().unwrap();
            let args = command_for(&kind, &file, scratch.path());
            let out = Command::cargo_bin("ppdsim")
                .unwrap()
                .current_dir(scratch.path())
                .args(&args)
                .timeout(std::time::Duration::from_secs(60))
                .output()
                .unwrap();
            let code = out.status.code();
            let stderr = normalise(&String::from_utf8_lossy(&out.stderr), scratch.path());
            assert!(
                matches!(code, Some(2) | Some(3)),
                "{kind}/{name}: exit {code:?}, stderr:\n{stderr}"
            );
            assert!(!stderr.contains("panicked"), "{kind}/{name} panicked:\n{stderr}");
            assert!(stderr.contains("error"), "{kind}/{name}: no error message:\n{stderr}");
            // Nothing written in the scratch directory, the input untouched.
            let left: Vec<_> = std::fs::read_dir(scratch.path()).unwrap().collect();
            assert!(
                left.is_empty(),
                "{kind}/{name} left {} files in the scratch directory",
                left.len()
            );
            assert_eq!(std::fs::read(&file).unwrap(), before, "{kind}/{name} changed its input");
            insta::assert_snapshot!(
                format!("{kind}__{}", name.replace('.', "_")),
                format!("exit {}\n{}", code.unwrap(), stderr.trim_end())
            );
            count += 1;
        }
    }
    assert!(count >= 120, "the corpus holds {count} bad inputs; keep at least 120");
}
