//! Fuzzing every parser on stable Rust (proptest): arbitrary bytes and structure-aware mutations of
//! the shipped valid files (random byte overwrites, insertions, deletions and truncation) must give
//! `Ok` or an error — never a panic, never a hang.
//!
//! `cargo test` runs a short pass (`FUZZ_CASES` below, per target). The long run gives each target
//! a time budget instead (findings are fixed and kept in `tests/data/invalid/` as regression
//! cases); 10 minutes per target, two targets at a time on 2 cores (≈ 55 minutes for the 11 targets):
//!
//! ```sh
//! FUZZ_SECONDS=600 cargo test --test it fuzz -- --test-threads 2 --nocapture
//! ```
//!
//! Each target prints how many cases it ran.

use ppdsim::calibrate::readers::{self, Format, ReadOptions};
use proptest::prelude::*;
use std::path::{Path, PathBuf};

/// Cases per target in a plain `cargo test` (the environment's `PROPTEST_CASES` overrides it).
const FUZZ_CASES: u32 = 24;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `test` on inputs drawn from `strategy`: [`FUZZ_CASES`] of them, or as many as fit in
/// `FUZZ_SECONDS` when that is set. Panics (with proptest's minimal failing input) when `test`
/// panics.
fn fuzz<S: Strategy>(name: &str, strategy: S, test: impl Fn(S::Value)) {
    use proptest::test_runner::{Config, TestRunner};
    let budget = std::env::var("FUZZ_SECONDS").ok().and_then(|v| v.parse::<u64>().ok());
    let config = |cases| Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let check = |runner: &mut TestRunner| {
        if let Err(e) = runner.run(&strategy, |v| {
            test(v);
            Ok(())
        }) {
            panic!("{name}: {e}");
        }
    };
    match budget {
        None => check(&mut TestRunner::new(config(FUZZ_CASES))),
        Some(secs) => {
            let t0 = std::time::Instant::now();
            let mut cases = 0u64;
            // A fresh runner per batch (a runner stops after its `cases`); each one draws its own
            // random inputs.
            while t0.elapsed().as_secs() < secs {
                check(&mut TestRunner::new(config(64)));
                cases += 64;
            }
            eprintln!(
                "fuzz {name}: {cases} cases in {:.0} s, no failure",
                t0.elapsed().as_secs_f64()
            );
        }
    }
}

/// One edit of a byte string: overwrite, insert or delete at a position (taken modulo the length).
#[derive(Clone, Debug)]
enum Edit {
    Set(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Truncate(usize),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    prop::collection::vec(
        prop_oneof![
            (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Edit::Set(p, b)),
            (
                any::<usize>(),
                prop::sample::select(b"0123456789-.e,:{}[]\"\n ".to_vec())
            )
                .prop_map(|(p, b)| Edit::Insert(p, b)),
            any::<usize>().prop_map(Edit::Delete),
            any::<usize>().prop_map(Edit::Truncate),
        ],
        1..8,
    )
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let n = bytes.len().max(1);
        match *e {
            Edit::Set(p, b) if !bytes.is_empty() => bytes[p % n] = b,
            Edit::Insert(p, b) => bytes.insert(p % (bytes.len() + 1), b),
            Edit::Delete(p) if !bytes.is_empty() => {
                bytes.remove(p % n);
            }
            Edit::Truncate(p) => bytes.truncate(p % (bytes.len() + 1)),
            _ => {}
        }
    }
    bytes
}

/// Writes `bytes` to `name` in a fresh scratch directory and runs `f` on its path.
fn with_file<T>(name: &str, bytes: &[u8], f: impl FnOnce(&Path) -> T) -> T {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    f(&p)
}

fn read_opts() -> ReadOptions {
    ReadOptions {
        model: ppdsim::hardware::model("llama-3.1-8b").unwrap().clone(),
        gpu: "h100-sxm".into(),
        tp: 1,
        block_size: 16,
        answer_mismatch_per_token: 0.0,
    }
}

/// A small valid scenario whose paths are absolute (so a copy anywhere loads).
fn valid_scenario() -> Vec<u8> {
    std::fs::read_to_string(root().join("tests/data/scenarios/small.toml"))
        .unwrap()
        .replace("../../../", &format!("{}/", root().display()))
        .into_bytes()
}

fn head(path: &str, n: usize) -> Vec<u8> {
    let text = std::fs::read(root().join(path)).unwrap();
    text.split(|&b| b == b'\n').take(n).collect::<Vec<_>>().join(&b'\n')
}

#[test]
fn fuzz_scenario_toml() {
    fuzz("scenario TOML", edits(), |e| {
        let bytes = apply(valid_scenario(), &e);
        with_file("s.toml", &bytes, |p| {
            let _ = ppdsim::scenario::LoadedScenario::load(p);
        });
    });
}

#[test]
fn fuzz_sweep_toml() {
    let scenario = root().join("tests/data/scenarios/small.toml");
    let text = format!(
        "scenario = {:?}\nrates_per_s = [1.0, 2.0]\nseeds = [1]\n[[vary]]\npolicy = \"pd\"\nkey = \"prefill_instances\"\nvalues = [1, 2]\n",
        scenario.display().to_string()
    );
    fuzz("sweep TOML", edits(), |e| {
        let bytes = apply(text.clone().into_bytes(), &e);
        with_file("w.toml", &bytes, |p| {
            let _ = ppdsim::sweep::LoadedSweep::load(p);
        });
    });
}

#[test]
fn fuzz_native_trace() {
    let valid = head("traces/sharegpt-3000.jsonl", 20);
    fuzz("native trace", edits(), |e| {
        with_file("t.jsonl", &apply(valid.clone(), &e), |p| {
            let _ = ppdsim::trace::read_trace(p);
        });
    });
}

#[test]
fn fuzz_native_trace_gzip() {
    // Edits of a gzip stream: corrupt blocks, truncations, and trailers whose size or checksum
    // lies (the reader sizes its buffer from the trailer and parses while it inflates).
    let valid = {
        use std::io::Write;
        let mut z = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        // 700 lines (≈ 150 KB): several of the reader's 64 KiB regions.
        z.write_all(&head("traces/sharegpt-3000.jsonl", 700)).expect("compress");
        z.finish().expect("compress")
    };
    // Each stream that still starts like gzip is also inflated whole and its text read as a
    // plain trace: the two reads must agree (the same conversations, or the same error but for
    // the file name), or both fail on the stream.
    fuzz("native trace, gzip", (edits(), any::<Option<u32>>()), |(e, size)| {
        let mut bytes = apply(valid.clone(), &e);
        if let (Some(size), Some(trailer)) = (size, bytes.last_chunk_mut::<4>()) {
            *trailer = size.to_le_bytes();
        }
        // The read's result, its error without the file's name.
        let read = |name: &str, stored: &[u8]| {
            with_file(name, stored, |p| {
                ppdsim::trace::read_trace(p).map_err(|e| e.to_string().replace(&p.display().to_string(), "FILE"))
            })
        };
        let gz = read("t.jsonl.gz", &bytes);
        // Without gzip's magic bytes the file is read as plain text (its own oracle).
        if !ppdsim::input::is_gzip(&bytes) {
            return;
        }
        match ppdsim::input::gunzip(Path::new("t"), &bytes, ppdsim::input::OnTruncation::Error) {
            Err(_) => assert!(gz.as_ref().is_err_and(|e| e.contains("corrupt gzip")), "{gz:?}"),
            Ok(text) => assert_eq!(gz, read("t.jsonl", &text)),
        }
    });
}

#[test]
fn fuzz_native_trace_arbitrary_bytes() {
    fuzz(
        "native trace, arbitrary bytes",
        prop::collection::vec(any::<u8>(), 0..512),
        |bytes| {
            with_file("t.jsonl", &bytes, |p| {
                let _ = ppdsim::trace::read_trace(p);
            });
        },
    );
}

#[test]
fn fuzz_sharegpt_import() {
    let valid = std::fs::read(root().join("tests/data/sharegpt_fixture.json")).unwrap();
    fuzz("ShareGPT import", edits(), |e| {
        with_file("s.json", &apply(valid.clone(), &e), |p| {
            let _ = ppdsim::trace::sharegpt::import(p);
        });
    });
}

#[test]
fn fuzz_mooncake_import() {
    let valid = head("tests/data/mooncake_fixture.jsonl", 40);
    fuzz("Mooncake import", edits(), |e| {
        with_file("m.jsonl", &apply(valid.clone(), &e), |p| {
            let _ = ppdsim::trace::mooncake::import(p);
        });
    });
}

#[test]
fn fuzz_azure_import() {
    let valid = head("tests/data/azure_conv_head.csv", 30);
    fuzz("Azure import", edits(), |e| {
        with_file("a.csv", &apply(valid.clone(), &e), |p| {
            let _ = ppdsim::trace::requests::import_azure(p);
        });
    });
}

#[test]
fn fuzz_vidur_import() {
    let valid = head("tests/data/vidur_arxiv_head.csv", 30);
    fuzz("Vidur import", edits(), |e| {
        with_file("v.csv", &apply(valid.clone(), &e), |p| {
            let _ = ppdsim::trace::requests::import_vidur(p);
        });
    });
}

#[test]
fn fuzz_calibration_readers() {
    let files = [
        "llmservingsim_layers_tp1_sample.csv",
        "aiconfigurator_gemm_sample.csv",
        "aiconfigurator_context_attention_sample.csv",
        "aiconfigurator_generation_attention_sample.csv",
        "splitwise_perf_model_sample.csv",
        "kv_transfer_measurements.csv",
        "native_sample.jsonl",
        "seed002_as_ppd_framework.json",
        "vllm-ppd_bandwidth_results.json",
        "vllm-ppd_sensitivity_experiment_sample.json",
        "vllm-ppd_qps_benchmark_v3.lowqps_sample.json",
        "vllm-ppd_qps_benchmark_2gpu.lowqps_sample.json",
        "vllm-ppd_comprehensive_ok.json",
        "vllm-ppd_multi_turn_results.json",
        "vllm-ppd_single_stream_sample.json",
        "vllm-ppd_core_experiment_sample.json",
    ];
    // Mutations of the first lines of big tables keep each case fast.
    let head60 = |full: Vec<u8>| full.split(|&b| b == b'\n').take(60).collect::<Vec<_>>().join(&b'\n');
    let mut valid: Vec<(&str, Vec<u8>)> = files
        .iter()
        .map(|f| {
            (
                *f,
                head60(std::fs::read(root().join("tests/data/measurements").join(f)).unwrap()),
            )
        })
        .collect();
    // Vidur's profile tables (gzip in the repository: their first lines, uncompressed).
    for (name, path) in [
        ("mlp.csv", "calibration/vidur-llama-2-7b/mlp.csv.gz"),
        (
            "attention.csv",
            "calibration/vidur-llama-2-7b/attention-llama-2-7b-hf-h100-from-aiconfigurator.csv.gz",
        ),
    ] {
        use std::io::Read;
        let mut text = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(root().join(path)).unwrap())
            .read_to_end(&mut text)
            .unwrap();
        valid.push((name, head60(text)));
    }
    fuzz("calibration readers", (0..valid.len(), edits()), |(k, e)| {
        let (name, bytes) = &valid[k];
        with_file(name, &apply(bytes.clone(), &e), |p| {
            let _ = readers::read(p, Format::Auto, &read_opts());
        });
    });
}

#[test]
fn fuzz_model_file() {
    let valid = std::fs::read(root().join("calibration/h100-llama3.1-8b-eager.json")).unwrap();
    fuzz("model file", edits(), |e| {
        with_file("m.json", &apply(valid.clone(), &e), |p| {
            let _ = ppdsim::calibrate::model_file::CalibrationFile::load(p);
        });
    });
}
