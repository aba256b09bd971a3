//! Fuzzing every parser on stable Rust (proptest): arbitrary bytes and structure-aware mutations of
//! the shipped valid files (random byte overwrites, insertions, deletions and truncation) must give
//! `Ok` or an error — never a panic, never a hang.
//!
//! `cargo test` runs a short pass (`FUZZ_CASES` below, per target). The long run, ≥ 10 minutes per
//! target on 2 cores (findings are kept in `tests/data/invalid/` and as regression cases here):
//!
//! ```sh
//! PROPTEST_CASES=20000 cargo test --release --test it fuzz -- --test-threads 2
//! ```

use ppdsim::calibrate::readers::{self, Format, ReadOptions};
use proptest::prelude::*;
use std::path::{Path, PathBuf};

/// Cases per target in a plain `cargo test` (the environment's `PROPTEST_CASES` overrides it).
const FUZZ_CASES: u32 = 24;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(FUZZ_CASES);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
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

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_scenario_toml(e in edits()) {
        let bytes = apply(valid_scenario(), &e);
        with_file("s.toml", &bytes, |p| { let _ = ppdsim::scenario::LoadedScenario::load(p); });
    }

    #[test]
    fn fuzz_sweep_toml(e in edits()) {
        let scenario = root().join("tests/data/scenarios/small.toml");
        let text = format!("scenario = {:?}\nrates_per_s = [1.0, 2.0]\nseeds = [1]\n[[vary]]\npolicy = \"pd\"\nkey = \"prefill_instances\"\nvalues = [1, 2]\n", scenario.display().to_string());
        let bytes = apply(text.into_bytes(), &e);
        with_file("w.toml", &bytes, |p| { let _ = ppdsim::sweep::LoadedSweep::load(p); });
    }

    #[test]
    fn fuzz_native_trace(e in edits()) {
        let bytes = apply(head("traces/sharegpt-3000.jsonl", 20), &e);
        with_file("t.jsonl", &bytes, |p| { let _ = ppdsim::trace::read_trace(p); });
    }

    #[test]
    fn fuzz_native_trace_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        with_file("t.jsonl", &bytes, |p| { let _ = ppdsim::trace::read_trace(p); });
    }

    #[test]
    fn fuzz_sharegpt_import(e in edits()) {
        let bytes = apply(std::fs::read(root().join("tests/data/sharegpt_fixture.json")).unwrap(), &e);
        with_file("s.json", &bytes, |p| { let _ = ppdsim::trace::sharegpt::import(p); });
    }

    #[test]
    fn fuzz_mooncake_import(e in edits()) {
        let bytes = apply(head("tests/data/mooncake_fixture.jsonl", 40), &e);
        with_file("m.jsonl", &bytes, |p| { let _ = ppdsim::trace::mooncake::import(p); });
    }

    #[test]
    fn fuzz_azure_import(e in edits()) {
        let bytes = apply(head("tests/data/azure_conv_head.csv", 30), &e);
        with_file("a.csv", &bytes, |p| { let _ = ppdsim::trace::requests::import_azure(p); });
    }

    #[test]
    fn fuzz_vidur_import(e in edits()) {
        let bytes = apply(head("tests/data/vidur_arxiv_head.csv", 30), &e);
        with_file("v.csv", &bytes, |p| { let _ = ppdsim::trace::requests::import_vidur(p); });
    }

    #[test]
    fn fuzz_calibration_readers(
        file in prop::sample::select(vec![
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
        ]),
        e in edits(),
    ) {
        let full = std::fs::read(root().join("tests/data/measurements").join(file)).unwrap();
        // Mutations of the first lines of big tables keep each case fast.
        let bytes = apply(full.split(|&b| b == b'\n').take(60).collect::<Vec<_>>().join(&b'\n'), &e);
        with_file(file, &bytes, |p| { let _ = readers::read(p, Format::Auto, &read_opts()); });
    }

    #[test]
    fn fuzz_model_file(e in edits()) {
        let bytes = apply(std::fs::read(root().join("calibration/h100-llama3.1-8b-eager.json")).unwrap(), &e);
        with_file("m.json", &bytes, |p| { let _ = ppdsim::calibrate::model_file::CalibrationFile::load(p); });
    }
}
