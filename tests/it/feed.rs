//! `ppdsim run`'s trace feed (a single-run trace replay fed its conversations as the trace is
//! read): the same files as reading the trace first, and the same errors, with nothing left
//! behind, when the trace turns out bad after the run has started.

use assert_cmd::Command;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn ppdsim() -> Command {
    Command::cargo_bin("ppdsim").unwrap()
}

/// `ppdsim run SCENARIO -q --timings -o OUT EXTRA…` on `threads` threads, the trace fed or read
/// first: (exit code, stderr).
fn run(scenario: &Path, out: &Path, fed: bool, threads: &str, extra: &[&str]) -> (i32, String) {
    let mut c = ppdsim();
    c.env("RAYON_NUM_THREADS", threads)
        .arg("run")
        .arg(scenario)
        .args(["-q", "--timings", "-o"])
        .arg(out)
        .args(extra);
    if !fed {
        c.arg("--read-trace-first");
    }
    let o = c.output().unwrap();
    (o.status.code().unwrap(), String::from_utf8(o.stderr).unwrap())
}

/// The `--timings` table without its figures (the rows it has say which path the run took).
fn rows(timings: &str) -> Vec<String> {
    timings
        .lines()
        .map(|l| {
            l.split(|c: char| c.is_ascii_digit())
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .collect()
}

/// Runs `scenario` fed and read first, on 1 and 2 threads: every file identical, and the fed
/// runs did take the fed path (their timings say so).
fn assert_fed_writes_what_read_first_writes(scenario: &Path, extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let (first, first_timings) = {
        let out = dir.path().join("first");
        let (code, err) = run(scenario, &out, false, "2", extra);
        assert_eq!(code, 0, "{err}");
        (super::util::tree(&out), err)
    };
    assert!(rows(&first_timings).contains(&"trace".to_string()), "{first_timings}");
    assert!(first.contains_key(Path::new("requests.csv")), "{:?}", first.keys());
    for threads in ["1", "2"] {
        let out = dir.path().join(format!("fed{threads}"));
        let (code, err) = run(scenario, &out, true, threads, extra);
        assert_eq!(code, 0, "{err}");
        assert!(
            err.contains("trace read and fed to the run meanwhile") && !rows(&err).contains(&"trace".to_string()),
            "the fed path was not taken: {err}"
        );
        let fed = super::util::tree(&out);
        assert_eq!(fed.keys().collect::<Vec<_>>(), first.keys().collect::<Vec<_>>());
        for (file, bytes) in &first {
            assert!(
                fed[file] == *bytes,
                "{} differs, fed on {threads} threads",
                file.display()
            );
        }
    }
    // Into a folder whose parent does not exist yet the ordinary path is taken (the fed one
    // stages only where it makes no folder before the trace is known to be good).
    let out = dir.path().join("new/parent/out");
    let (code, err) = run(scenario, &out, true, "2", extra);
    assert_eq!(code, 0, "{err}");
    assert!(rows(&err).contains(&"trace".to_string()), "{err}");
    // scenario.resolved.toml's paths are relative to the folder, two levels deeper here.
    let mut deeper = super::util::tree(&out);
    let mut same = first.clone();
    for files in [&mut deeper, &mut same] {
        assert!(files.remove(Path::new("scenario.resolved.toml")).is_some());
    }
    assert!(deeper == same, "the ordinary path's files differ");
}

#[test]
fn vidur_fed_writes_what_reading_the_trace_first_writes() {
    let sc = root().join("scenarios/vidur-arxiv-qps2.toml");
    assert_fed_writes_what_read_first_writes(&sc, &["--no-plots"]);
    // Part of the trace, replayed 3× faster (a heavier load), with the figures.
    assert_fed_writes_what_read_first_writes(
        &sc,
        &[
            "--set",
            "workload.num_conversations=1500",
            "--set",
            "workload.arrival.speedup=3.0",
        ],
    );
}

/// The first `n` lines of the shipped ShareGPT trace (multi-turn), each given an arrival 0.05 s
/// after the one before (two at a time share one), gzip-compressed.
fn multi_turn_trace(n: usize) -> Vec<u8> {
    let text = std::fs::read_to_string(root().join("traces/sharegpt-3000.jsonl")).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for (i, line) in text.lines().take(n).enumerate() {
        let line = line.strip_suffix('}').unwrap();
        writeln!(gz, "{line},\"arrival_s\":{}}}", (i / 2) as f64 * 0.05).unwrap();
    }
    gz.finish().unwrap()
}

/// A scenario in `dir` replaying `trace.jsonl.gz` of `dir` at its arrivals with `workload`'s
/// extra lines, on one PD cluster.
fn trace_scenario(dir: &Path, workload: &str) -> PathBuf {
    let calibration = root().join("calibration/h100-llama3.1-8b.json");
    let text = format!(
        r#"name = "fed"
seed = 7
model = "llama-3.1-8b"
gpu = "h100-sxm"
calibration = "{}"

[workload]
trace = "trace.jsonl.gz"
arrival = {{ kind = "trace" }}
{workload}

[slo]
ttft_ms = 500.0
tpot_ms = 50.0

[[cluster]]
shape = "1P_1pD"

[[router]]
kind = "ppd"
"#,
        calibration.display().to_string().replace('\\', "/")
    );
    let path = dir.join("fed.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_multi_turn_trace_fed_with_think_times_writes_what_reading_it_first_writes() {
    // Exponential think times: the draws must come in the same order, conversation by
    // conversation, whether the workload is built at once or as the run takes it.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("trace.jsonl.gz"), multi_turn_trace(600)).unwrap();
    let sc = trace_scenario(
        dir.path(),
        "num_conversations = 500\nthink_time = { kind = \"exponential\", mean_s = 2.0 }",
    );
    assert_fed_writes_what_read_first_writes(&sc, &["--no-plots"]);
}

/// Vidur's trace as text, with `edit` applied to its lines.
fn vidur_trace_with(edit: impl Fn(&mut Vec<String>)) -> Vec<u8> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(root().join("traces/vidur-arxiv-qps2-10000.jsonl.gz")).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    edit(&mut lines);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all((lines.join("\n") + "\n").as_bytes()).unwrap();
    gz.finish().unwrap()
}

/// The scenario `vidur-arxiv-qps2.toml` copied into `dir`, on `trace` (written there).
fn vidur_scenario_on(dir: &Path, trace: &[u8]) -> PathBuf {
    std::fs::write(dir.join("trace.jsonl.gz"), trace).unwrap();
    let text = std::fs::read_to_string(root().join("scenarios/vidur-arxiv-qps2.toml"))
        .unwrap()
        .replace("../traces/vidur-arxiv-qps2-10000.jsonl.gz", "trace.jsonl.gz")
        .replace(
            "../calibration/h100-llama2-7b-vidur.json",
            &root()
                .join("calibration/h100-llama2-7b-vidur.json")
                .display()
                .to_string()
                .replace('\\', "/"),
        );
    let path = dir.join("vidur.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_trace_found_bad_while_fed_fails_as_reading_it_first_does_and_leaves_nothing() {
    type Edit = Box<dyn Fn(&mut Vec<String>)>;
    let cases: Vec<(&str, Edit, &[&str], &str)> = vec![
        (
            "a bad line late in the trace",
            Box::new(|l: &mut Vec<String>| l[8999] = "{\"id\":\"broken\"".into()),
            &[],
            ".jsonl.gz:9000:",
        ),
        (
            "a conversation too large for an instance's KV memory, mid-run",
            Box::new(|l: &mut Vec<String>| l[5999] = l[5999].replacen("\"user_tokens\":", "\"user_tokens\":99999", 1)),
            &[],
            "KV tokens",
        ),
        (
            "arrivals out of order, mid-run",
            Box::new(|l: &mut Vec<String>| {
                let at = l[7000].find("\"arrival_s\":").unwrap();
                l[7000].truncate(at);
                l[7000].push_str("\"arrival_s\":0.5}");
            }),
            &[],
            "time order",
        ),
        (
            "a repeated id at the end",
            Box::new(|l: &mut Vec<String>| l[9999] = l[9999].replace("vidur-10000", "vidur-1")),
            &[],
            "already used",
        ),
        (
            "more conversations asked for than the trace holds",
            Box::new(|_: &mut Vec<String>| {}),
            &["--set", "workload.num_conversations=10001"],
            "must be in 1..=10000",
        ),
        (
            "a first turn without a prompt token, past the conversations replayed",
            Box::new(|l: &mut Vec<String>| {
                let at = l[9500].find("\"user_tokens\":").unwrap() + "\"user_tokens\":".len();
                let digits = l[9500][at..].find(',').unwrap();
                l[9500].replace_range(at..at + digits, "0");
            }),
            &["--set", "workload.num_conversations=100"],
            "no prompt token",
        ),
        (
            "an engine length limit below every request",
            Box::new(|_: &mut Vec<String>| {}),
            &[
                "--set",
                "workload.num_conversations=100",
                "--set",
                "engine.max_model_len=100",
            ],
            "max_model_len",
        ),
    ];
    for (what, edit, extra, needle) in cases {
        let dir = tempfile::tempdir().unwrap();
        let sc = vidur_scenario_on(dir.path(), &vidur_trace_with(edit));
        let before: Vec<_> = super::util::tree(dir.path()).into_keys().collect();
        let out = dir.path().join("out");
        let mut args = vec!["--no-plots"];
        args.extend_from_slice(extra);
        let (code_first, err_first) = run(&sc, &out, false, "2", &args);
        let (code_fed, err_fed) = run(&sc, &out, true, "2", &args);
        assert_eq!(code_first, 3, "{what}: {err_first}");
        assert!(err_first.contains(needle), "{what}: {err_first}");
        assert_eq!((code_fed, &err_fed), (code_first, &err_first), "{what}");
        assert!(!out.exists(), "{what}: no output may be written on error");
        let after: Vec<_> = super::util::tree(dir.path()).into_keys().collect();
        assert_eq!(after, before, "{what}: the folder is as it was");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 2, "{what}: only the scenario and its trace: {left:?}");
    }
}
