//! Output safety: ppdsim never deletes or replaces a file it did not write (issue: "never lose a
//! user's file"). Every test works in its own scratch directory and checks that the user's files
//! are byte-for-byte intact afterwards.

use assert_cmd::Command;
use predicates::prelude::*;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn ppdsim() -> Command {
    Command::cargo_bin("ppdsim").unwrap()
}

use crate::util::tree as snapshot;

/// A scratch directory holding a user's files, and a copy of the small test scenario whose paths
/// point back into the repository.
fn workspace() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "my notes\n").unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("data/results.csv"), "a,b\n1,2\n").unwrap();
    let scenario = small_scenario(dir.path(), "small");
    (dir, scenario)
}

/// Writes a copy of `tests/data/scenarios/small.toml` named `name` into `dir` (absolute paths).
fn small_scenario(dir: &Path, name: &str) -> PathBuf {
    let text = std::fs::read_to_string(root().join("tests/data/scenarios/small.toml"))
        .unwrap()
        .replace("name = \"small\"", &format!("name = {name:?}"))
        .replace("../../../calibration/", &format!("{}/calibration/", root().display()))
        .replace("../../../traces/", &format!("{}/traces/", root().display()));
    let p = dir.join(format!("scenario-{}.toml", name.len()));
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn run_into_the_working_directory_is_refused_and_deletes_nothing() {
    let (dir, scenario) = workspace();
    let before = snapshot(dir.path());
    ppdsim()
        .current_dir(dir.path())
        .arg("run")
        .arg(&scenario)
        .args(["-o", "."])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("holds files ppdsim did not write").and(predicate::str::contains("--force")));
    assert_eq!(snapshot(dir.path()), before, "the working directory changed");
}

#[test]
fn run_into_a_foreign_directory_is_refused_and_force_adds_beside_without_replacing() {
    let (dir, scenario) = workspace();
    let data = dir.path().join("data");
    let before = snapshot(&data);
    for cmd in ["run", "sweep"] {
        let input = if cmd == "run" {
            scenario.clone()
        } else {
            let sweep = dir.path().join("sweep.toml");
            std::fs::write(
                &sweep,
                format!(
                    "scenario = {:?}\nrates_per_s = [1.0, 2.0]\n",
                    scenario.display().to_string()
                ),
            )
            .unwrap();
            sweep
        };
        ppdsim()
            .arg(cmd)
            .arg(&input)
            .arg("-o")
            .arg(&data)
            .arg("-q")
            .assert()
            .code(3)
            .stderr(predicate::str::contains("did not write"));
        assert_eq!(snapshot(&data), before, "{cmd} touched the user's directory");
    }
    // --force writes ppdsim's files beside the user's; theirs are unchanged.
    ppdsim()
        .arg("run")
        .arg(&scenario)
        .arg("-o")
        .arg(&data)
        .args(["-q", "--force"])
        .assert()
        .success();
    let after = snapshot(&data);
    assert_eq!(after[Path::new("results.csv")], before[Path::new("results.csv")]);
    assert!(after.contains_key(Path::new("summary.csv")) && after.contains_key(Path::new(".ppdsim-manifest.json")));
    // A foreign file named like one of ppdsim's outputs is never replaced, even with --force.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("summary.csv"), "mine\n").unwrap();
    ppdsim()
        .arg("run")
        .arg(&scenario)
        .arg("-o")
        .arg(&other)
        .args(["-q", "--force"])
        .assert()
        .code(3)
        .stderr(predicate::str::contains("summary.csv").and(predicate::str::contains("not written by ppdsim")));
    assert_eq!(std::fs::read(other.join("summary.csv")).unwrap(), b"mine\n");
    assert_eq!(
        std::fs::read_dir(&other).unwrap().count(),
        1,
        "nothing else was written"
    );
}

/// `ppdsim run SCENARIO -o OUT -q`, which must succeed.
fn run_into(scenario: &Path, out: &Path) {
    ppdsim()
        .arg("run")
        .arg(scenario)
        .arg("-o")
        .arg(out)
        .arg("-q")
        .assert()
        .success();
}

#[test]
fn rerun_replaces_only_the_files_its_manifest_lists() {
    let (dir, scenario) = workspace();
    let out = dir.path().join("out");
    for _ in 0..2 {
        run_into(&scenario, &out);
        // A user's file added to the results directory survives the next run.
        std::fs::write(out.join("my-analysis.txt"), "keep me\n").unwrap();
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join(".ppdsim-manifest.json")).unwrap()).unwrap();
    let files: Vec<&str> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(
        files,
        [
            "plots/latency_by_policy.png",
            "plots/latency_by_policy.svg",
            "plots/latency_cdf.png",
            "plots/latency_cdf.svg",
            "plots/timeline_pd.png",
            "plots/timeline_pd.svg",
            "plots/timeline_ppd.png",
            "plots/timeline_ppd.svg",
            "plots/ttft_by_turn.csv",
            "plots/ttft_by_turn.png",
            "plots/ttft_by_turn.svg",
            "requests.csv",
            "scenario.resolved.toml",
            "summary.csv",
            "summary.json",
            "timeline.csv"
        ]
    );
    assert_eq!(std::fs::read(out.join("my-analysis.txt")).unwrap(), b"keep me\n");
    // plot redraws into the same directory, keeping the user's file.
    ppdsim().arg("plot").arg(&out).assert().success();
    assert_eq!(std::fs::read(out.join("my-analysis.txt")).unwrap(), b"keep me\n");
}

#[test]
fn scenario_names_that_are_not_plain_file_names_are_refused() {
    for name in ["..", ".", "", "../../etc", "a/b", "x\\\\y"] {
        let (dir, _) = workspace();
        let scenario = small_scenario(dir.path(), name);
        let before = snapshot(dir.path());
        ppdsim()
            .current_dir(dir.path())
            .arg("run")
            .arg(&scenario)
            .assert()
            .code(3)
            .stderr(predicate::str::contains("(key `name`)"));
        assert_eq!(snapshot(dir.path()), before, "name {name:?} changed the directory");
    }
}

#[test]
fn import_and_calibrate_never_write_over_an_input() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("a.csv");
    std::fs::copy(root().join("tests/data/azure_conv_head.csv"), &csv).unwrap();
    let before = std::fs::read(&csv).unwrap();
    ppdsim()
        .args(["trace", "import", "azure"])
        .arg(&csv)
        .arg("-o")
        .arg(&csv)
        .assert()
        .code(3)
        .stderr(predicate::str::contains("is also an input"));
    assert_eq!(std::fs::read(&csv).unwrap(), before);
    // Nor over a file that is not a native trace (without --force).
    ppdsim()
        .args(["trace", "import", "azure"])
        .arg(&csv)
        .arg("-o")
        .arg(dir.path().join("a.csv").with_file_name("b.jsonl"))
        .assert()
        .success();
    std::fs::write(dir.path().join("c.jsonl"), "not a trace\n").unwrap();
    ppdsim()
        .args(["trace", "import", "azure"])
        .arg(&csv)
        .arg("-o")
        .arg(dir.path().join("c.jsonl"))
        .assert()
        .code(3)
        .stderr(predicate::str::contains("not a native trace written by ppdsim"));
    assert_eq!(std::fs::read(dir.path().join("c.jsonl")).unwrap(), b"not a trace\n");
    // A re-import replaces ppdsim's own trace.
    ppdsim()
        .args(["trace", "import", "azure"])
        .arg(&csv)
        .arg("-o")
        .arg(dir.path().join("b.jsonl"))
        .assert()
        .success();
    let m = dir.path().join("m.json");
    std::fs::copy(
        root().join("tests/data/measurements/vllm-ppd_core_experiment_sample.json"),
        &m,
    )
    .unwrap();
    let before = std::fs::read(&m).unwrap();
    ppdsim()
        .arg("calibrate")
        .arg(&m)
        .arg(root().join("tests/data/measurements/llmservingsim_layers_tp1_sample.csv"))
        .arg("-o")
        .arg(&m)
        .assert()
        .code(3)
        .stderr(predicate::str::contains("is also an input"));
    assert_eq!(std::fs::read(&m).unwrap(), before);
}

#[test]
fn stale_temporaries_of_a_killed_run_are_removed_by_the_next_run() {
    let (dir, scenario) = workspace();
    // What a run killed with SIGKILL leaves: a staging directory named after a dead process.
    let stale = dir.path().join(".out.ppdsim-tmp-4194000");
    std::fs::create_dir(&stale).unwrap();
    std::fs::write(stale.join("requests.csv"), "half").unwrap();
    ppdsim()
        .arg("run")
        .arg(&scenario)
        .arg("-o")
        .arg(dir.path().join("out"))
        .arg("-q")
        .assert()
        .success()
        .stderr(predicate::str::contains("left by an interrupted ppdsim run"));
    assert!(!stale.exists());
}

#[cfg(unix)]
#[test]
fn sigint_removes_the_staging_directory() {
    let (dir, _) = workspace();
    let out = dir.path().join("out");
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("ppdsim"))
        .arg("run")
        .arg(root().join("benches/sharegpt-3000-rate10.toml"))
        .arg("-o")
        .arg(&out)
        .arg("-q")
        .env("RAYON_NUM_THREADS", "1")
        .spawn()
        .unwrap();
    let staging = dir.path().join(format!(".out.ppdsim-tmp-{}", child.id()));
    let t0 = std::time::Instant::now();
    while !staging.exists() && t0.elapsed() < std::time::Duration::from_secs(20) {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert!(staging.exists(), "the run never created its staging directory");
    // SAFETY: sending SIGINT to our own child process.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let status = child.wait().unwrap();
    if status.success() {
        // It finished before the signal arrived: the results are whole and nothing is left over.
        assert!(out.join(".ppdsim-manifest.json").is_file());
    } else {
        assert_eq!(status.code(), Some(130));
        assert!(!out.exists());
    }
    assert!(!staging.exists(), "staging directory left behind");
}

#[cfg(unix)]
#[test]
fn devices_and_fifos_are_refused_without_reading_them() {
    // /dev/zero would fill memory; a FIFO without a writer would block forever.
    for args in [
        vec!["trace", "stats", "/dev/zero"],
        vec!["run", "/dev/zero"],
        vec!["calibrate", "/dev/zero"],
        vec!["trace", "import", "azure", "/dev/zero", "-o", "never.jsonl"],
    ] {
        ppdsim()
            .args(&args)
            .timeout(std::time::Duration::from_secs(20))
            .assert()
            .code(3)
            .stderr(predicate::str::contains("not a regular file"));
    }
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.jsonl");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: creating a FIFO at a path in our scratch directory.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    ppdsim()
        .args(["trace", "stats"])
        .arg(&fifo)
        .timeout(std::time::Duration::from_secs(20))
        .assert()
        .code(3)
        .stderr(predicate::str::contains("not a regular file"));
}

#[test]
fn an_endless_line_is_refused_with_its_line_number() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.jsonl");
    let mut bytes = b"{\"id\":\"a\",\"turns\":[{\"user_tokens\":1,\"assistant_tokens\":1}]}\n".to_vec();
    bytes.extend(std::iter::repeat_n(b'x', 17 << 20));
    std::fs::write(&p, bytes).unwrap();
    ppdsim()
        .args(["trace", "stats"])
        .arg(&p)
        .assert()
        .code(3)
        .stderr(predicate::str::contains("t.jsonl:2").and(predicate::str::contains("16 MiB limit")));
    // The same for a measurement table and a request trace.
    let mut table = b"m,n,k,latency_ms\n".to_vec();
    table.extend(std::iter::repeat_n(b'1', 17 << 20));
    let csv = dir.path().join("gemm.csv");
    std::fs::write(&csv, &table).unwrap();
    ppdsim()
        .arg("calibrate")
        .arg(&csv)
        .arg("-o")
        .arg(dir.path().join("m.json"))
        .assert()
        .code(3)
        .stderr(predicate::str::contains("gemm.csv:2").and(predicate::str::contains("16 MiB limit")));
    ppdsim()
        .args(["trace", "import", "azure"])
        .arg(&csv)
        .arg("-o")
        .arg(dir.path().join("a.jsonl"))
        .assert()
        .code(3)
        .stderr(predicate::str::contains("gemm.csv:2"));
}

#[test]
fn calibrate_refuses_a_declared_bandwidth_that_is_not_one() {
    for v in ["0", "nan", "inf", "-5"] {
        let dir = tempfile::tempdir().unwrap();
        ppdsim()
            .arg("calibrate")
            .arg(root().join("tests/data/measurements/llmservingsim_layers_tp1_sample.csv"))
            .arg(root().join("tests/data/measurements/vllm-ppd_core_experiment_sample.json"))
            .arg(format!("--declared-bandwidth-gbps={v}"))
            .arg("-o")
            .arg(dir.path().join("m.json"))
            .assert()
            .code(2)
            .stderr(predicate::str::contains("--declared-bandwidth-gbps"));
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "{v}: nothing written"
        );
    }
}

#[test]
fn plot_refuses_results_without_rows() {
    let (dir, scenario) = workspace();
    let out = dir.path().join("out");
    run_into(&scenario, &out);
    // Keep only the header of summary.csv: nothing to plot.
    let text = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    std::fs::write(out.join("summary.csv"), format!("{}\n", text.lines().next().unwrap())).unwrap();
    let before = snapshot(&out);
    ppdsim()
        .arg("plot")
        .arg(&out)
        .assert()
        .code(3)
        .stderr(predicate::str::contains("summary.csv").and(predicate::str::contains("holds no rows")));
    assert_eq!(snapshot(&out), before, "the old plots stay whole");
}
