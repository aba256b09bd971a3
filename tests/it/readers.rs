//! Every measurement reader on a real file sample (tests/data/measurements/, see its README),
//! and the physics checks on real and impossible data.

use ppdsim::calibrate::readers::{self, Format, Phase, ReadOptions, RequestRoute};
use ppdsim::calibrate::{self, CalibrateOptions};
use ppdsim::hardware;
use std::path::PathBuf;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/measurements")
        .join(name)
}

fn opts() -> ReadOptions {
    ReadOptions {
        model: hardware::model("llama-3.1-8b").unwrap().clone(),
        gpu: "h100-sxm".into(),
        tp: 1,
        block_size: 16,
        answer_mismatch_per_token: 0.0,
    }
}

fn read1(name: &str) -> readers::FileSamples {
    let mut v = readers::read(&data(name), Format::Auto, &opts()).unwrap();
    assert_eq!(v.len(), 1);
    v.remove(0)
}

fn close(a: f64, b: f64, tol: f64) {
    assert!((a - b).abs() <= tol, "{a} vs {b}");
}

#[test]
fn llmservingsim_layers_sum_to_forward_passes() {
    let f = read1("llmservingsim_layers_tp1_sample.csv");
    assert_eq!(f.reader, "llmservingsim-layers");
    assert_eq!(f.iterations.len(), 7);
    // The data README's table: TP1 forward ≈ 30.18 ms at N = 1024 with lm_head(N); we use lm_head(1):
    // 30.18 − (1437.2 − 366.3) µs ≈ 29.11 ms.
    let s = f
        .iterations
        .iter()
        .find(|s| s.batch.prefill[0].num_new_tokens == 1024)
        .unwrap();
    close(s.measured_ms, 29.11, 0.02);
    let s1 = f
        .iterations
        .iter()
        .find(|s| s.batch.prefill[0].num_new_tokens == 1)
        .unwrap();
    close(s1.measured_ms, 8.21, 0.01);
}

#[test]
fn aiconfigurator_tables_compose_into_forward_passes() {
    let tables: Vec<_> = [
        "aiconfigurator_gemm_sample.csv",
        "aiconfigurator_context_attention_sample.csv",
        "aiconfigurator_generation_attention_sample.csv",
    ]
    .iter()
    .map(|n| read1(n))
    .collect();
    assert_eq!(
        readers::detect(&std::fs::read_to_string(data("aiconfigurator_generation_attention_sample.csv")).unwrap()),
        Some(Format::AiconfiguratorGenerationAttention)
    );
    let k: Vec<_> = tables.iter().map(|t| t.kernel.as_ref().unwrap()).collect();
    let passes = readers::aiconfigurator::compose(&k, hardware::model("llama-3.1-8b").unwrap());
    let prefill = |m: u32| {
        passes
            .iter()
            .find(|s| s.phase == Phase::Prefill && s.batch.prefill[0].num_new_tokens == m)
            .unwrap()
            .measured_ms
    };
    // The data README composes ≈ 5.8 ms at m = 1 and ≈ 20.3 ms at m = 1024 (its LM head is approximate).
    close(prefill(1), 5.8, 0.3);
    close(prefill(1024), 20.3, 1.5);
    // A decode step of one sequence is at least the weight-read floor (4.8 ms).
    let d = passes
        .iter()
        .find(|s| s.phase == Phase::Decode && s.batch.num_decode_seqs == 1)
        .unwrap();
    assert!(d.measured_ms >= 4.79 && d.measured_ms < 7.0, "{}", d.measured_ms);
}

#[test]
fn splitwise_rows_are_filtered_by_model_gpu_and_tp() {
    let o = ReadOptions {
        model: hardware::model("llama-2-70b").unwrap().clone(),
        gpu: "h100-sxm".into(),
        tp: 4,
        block_size: 16,
        answer_mismatch_per_token: 0.0,
    };
    let f = readers::read(&data("splitwise_perf_model_sample.csv"), Format::Auto, &o)
        .unwrap()
        .remove(0);
    // 19 grid points × (prefill, decode) for llama2-70b on h100-80gb at TP 4, repeated runs included.
    assert!(f.iterations.len() >= 38 && f.iterations.len().is_multiple_of(2));
    let e = readers::read(&data("splitwise_perf_model_sample.csv"), Format::Auto, &opts())
        .unwrap_err()
        .to_string();
    assert!(e.contains("llama2-70b/h100-80gb/tp4") && e.contains("--tp"), "{e}");
}

#[test]
fn kv_transfer_table_gives_one_group_per_setup() {
    let v = readers::read(&data("kv_transfer_measurements.csv"), Format::Auto, &opts()).unwrap();
    assert_eq!(v.len(), 2);
    assert_eq!(v[0].model.as_deref(), Some("qwen3-8b"));
    assert_eq!(v[1].model.as_deref(), Some("qwen3-235b-a22b"));
    assert_eq!(v[0].transfers.len(), 9);
    // 1024 tokens of Qwen3-8B: 146 MiB reported in 1.50 ms.
    let t = v[0].transfers.iter().find(|t| t.bytes == 153_092_096).unwrap();
    close(t.measured_ms, 1.50, 1e-9);
}

#[test]
fn ppd_framework_results_are_append_prefill_requests() {
    let f = read1("seed002_as_ppd_framework.json");
    assert_eq!(f.reader, "ppd-framework");
    assert_eq!(f.model.as_deref(), Some("llama-3.1-8b"));
    assert_eq!(f.requests.len(), 21);
    let r = &f.requests[0];
    assert_eq!(r.route, RequestRoute::Direct);
    assert_eq!((r.steps[0].num_cached_tokens, r.steps[0].num_new_tokens), (102, 922));
}

#[test]
fn vllm_ppd_schemas_are_read_for_what_they_measure() {
    let core = read1("vllm-ppd_core_experiment_sample.json");
    assert_eq!(core.reader, "vllm-ppd-interference");
    // decoding_only at N = 10, 50, 250 (5 trials each) + 10 single-request trials.
    assert_eq!(core.iterations.len(), 25);
    assert!(core.iterations.iter().all(|s| s.phase == Phase::Decode));
    assert!(core.num_validation > 0, "mixed trials are validation data");
    // Burst ramps: (N, mean decode TTFT) of the decoding_only trials.
    assert_eq!(core.ramps.len(), 15);
    assert!(core.ramps.iter().any(|r| r.0 == 250.0 && r.1 > 1000.0));
    let sens = read1("vllm-ppd_sensitivity_experiment_sample.json");
    assert_eq!(sens.iterations.len(), 5);
    assert_eq!(sens.num_validation, 5);
    let v3 = read1("vllm-ppd_qps_benchmark_v3.lowqps_sample.json");
    assert_eq!(v3.reader, "vllm-ppd-lowqps-v3");
    // S_a pd (t1 256→256, t2 32): prompt 545; P holds the 256-token prompt, computes 289; D computes 1.
    let s = v3.requests.iter().find(|r| r.label.starts_with("S_a pd")).unwrap();
    assert_eq!(s.route, RequestRoute::Split);
    assert_eq!(s.kv_tokens, 545);
    assert_eq!(
        (
            s.steps[0].num_cached_tokens,
            s.steps[0].num_new_tokens,
            s.steps[1].num_new_tokens
        ),
        (256, 289, 1)
    );
    let d = v3.requests.iter().find(|r| r.label.starts_with("S_a ppd")).unwrap();
    // The pD holds 511 tokens → 496 in whole blocks; it computes 545 − 496 = 49.
    assert_eq!((d.steps[0].num_cached_tokens, d.steps[0].num_new_tokens), (496, 49));
    assert_eq!(
        read1("vllm-ppd_replication_benchmark_v3.lowqps_sample.json")
            .requests
            .len(),
        4
    );
    let two = read1("vllm-ppd_qps_benchmark_2gpu.lowqps_sample.json");
    assert_eq!(two.reader, "vllm-ppd-lowqps-2gpu");
    // Seed 003's W2 as sent: a 27 → 20-token greeting, then 4,096 nominal tokens that are 2,690
    // real ones: prompt 27 + 20 + 1 + 2,690 = 2,738. The pD holds the greeting and its answer
    // but the last token (46 → 32 in whole blocks) and computes 2,706; P holds the greeting's
    // 27 → 16 and computes 2,722.
    let w2 = |mode: &str| {
        two.requests
            .iter()
            .find(|r| r.label.starts_with(&format!("W2_RAG_ReadHeavy {mode} ")))
            .unwrap()
    };
    assert_eq!(
        (w2("ppd").steps[0].num_cached_tokens, w2("ppd").steps[0].num_new_tokens),
        (32, 2706)
    );
    assert_eq!(
        (
            w2("pd").steps[0].num_cached_tokens,
            w2("pd").steps[0].num_new_tokens,
            w2("pd").kv_tokens
        ),
        (16, 2722, 2738)
    );
    // Its points are kept for the replay, on 2 GPUs with the real lengths.
    assert_eq!(two.lowqps_points.len(), two.requests.len());
    let p = two.lowqps_points.iter().find(|p| p.workload.starts_with("W4")).unwrap();
    assert_eq!((p.gpus, p.shape), (2, [27, 20, 5347, 64]));
    assert!(p.t1_p50_ttft_ms.is_nan(), "the greeting is a non-streamed setup turn");
    let bw = read1("vllm-ppd_bandwidth_results.json");
    assert_eq!(bw.requests.len(), 9);
    assert!(bw.kv_statements.iter().all(|k| k.bytes == k.tokens * 131_072));
    assert_eq!(read1("vllm-ppd_multi_turn_results.json").num_validation, 5);
    assert_eq!(read1("vllm-ppd_single_stream_sample.json").num_validation, 3);
    // A loaded point is kept for the overheads' replay fit, not fitted as a sample.
    let ok = read1("vllm-ppd_comprehensive_ok.json");
    assert_eq!((ok.loaded_points.len(), ok.num_dropped, ok.num_samples()), (1, 0, 0));
    let failed = read1("vllm-ppd_comprehensive_failed.json");
    assert_eq!(
        (failed.num_validation, failed.num_dropped),
        (0, 1),
        "success_rate 0 is dropped with a count"
    );
}

#[test]
fn native_lines_are_read_and_bad_lines_refused() {
    let f = read1("native_sample.jsonl");
    assert_eq!(f.iterations.len(), 16);
    assert_eq!(f.transfers.len(), 1);
    assert_eq!(f.kv_statements.len(), 1);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.jsonl");
    std::fs::write(&p, "{\"kind\":\"decode_step\",\"batch_size\":4,\"latency_ms\":9.0}\n").unwrap();
    let e = readers::read(&p, Format::Native, &opts()).unwrap_err().to_string();
    assert!(e.contains("bad.jsonl:1") && e.contains("context_tokens"), "{e}");
    std::fs::write(
        &p,
        "{\"kind\":\"prefill\",\"num_new_tokens\":4,\"latency_ms\":9.0,\"colour\":\"red\"}\n",
    )
    .unwrap();
    let e = readers::read(&p, Format::Native, &opts()).unwrap_err().to_string();
    assert!(e.contains("colour"), "{e}");
}

#[test]
fn physics_check_fires_on_seed_002_and_stays_silent_on_real_h100_data() {
    let files: Vec<PathBuf> = [
        "llmservingsim_layers_tp1_sample.csv",
        "vllm-ppd_core_experiment_sample.json",
        "vllm-ppd_qps_benchmark_v3.lowqps_sample.json",
        "seed002_as_ppd_framework.json",
    ]
    .iter()
    .map(|n| data(n))
    .collect();
    let c = calibrate::calibrate(&files, &CalibrateOptions::default()).unwrap();
    let group = |n: &str| c.file.groups.iter().find(|g| g.group.starts_with(n)).unwrap().clone();
    let seed = group("ppd-framework");
    let fired: Vec<_> = seed.physics.iter().filter(|p| !p.ok).collect();
    assert_eq!(fired.len(), 1, "{:#?}", seed.physics);
    // Seed 002's TTFT barely moves with m: a 1,024-token prefill would take ~2 ms, needing several PFLOP/s.
    assert!(fired[0].implied > 4.0 * 989.0, "{}", fired[0].implied);
    assert!(fired[0].message.contains("prefix cache"));
    assert!(!seed.used_in_combined);
    for g in ["llmservingsim", "vllm-ppd-interference", "vllm-ppd-lowqps"] {
        let g = group(g);
        assert!(g.physics.iter().all(|p| p.ok), "{}: {:#?}", g.group, g.physics);
        assert!(g.used_in_combined);
    }
    // The combined model's own checks pass (its comparison with the kernel tables is tested in
    // calibrate.rs).
    assert!(c
        .file
        .physics
        .iter()
        .filter(|p| !p.check.contains("AIConfigurator"))
        .all(|p| p.ok));
}

#[test]
fn kv_size_statement_check_fires_on_the_seed_002_kv_claim() {
    // Seed 002: "For Llama-8B: ~1MB per 1024 tokens" — Llama-3.1-8B needs 128 MiB.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("seed002_kv.jsonl");
    std::fs::write(&p, "{\"kind\":\"kv_transfer\",\"bytes\":1048576,\"tokens\":1024,\"latency_ms\":0.04,\"model\":\"llama-3.1-8b\",\"hardware\":\"h100-sxm\",\"source\":\"seed 002\"}\n").unwrap();
    let mut files = vec![p];
    files.extend(
        [
            "llmservingsim_layers_tp1_sample.csv",
            "vllm-ppd_core_experiment_sample.json",
        ]
        .iter()
        .map(|n| data(n)),
    );
    let c = calibrate::calibrate(&files, &CalibrateOptions::default()).unwrap();
    let g = c.file.groups.iter().find(|g| g.group.starts_with("native")).unwrap();
    let kv = g
        .physics
        .iter()
        .find(|p| p.check.contains("KV bytes per token"))
        .unwrap();
    assert!(!kv.ok);
    close(kv.implied, 1024.0, 1e-9);
    close(kv.limit, 131_072.0, 1e-9);
}

#[test]
fn each_h100_source_alone_predicts_prefill_and_decode() {
    let files: Vec<PathBuf> = [
        "llmservingsim_layers_tp1_sample.csv",
        "aiconfigurator_gemm_sample.csv",
        "aiconfigurator_context_attention_sample.csv",
        "aiconfigurator_generation_attention_sample.csv",
        "vllm-ppd_core_experiment_sample.json",
        "vllm-ppd_qps_benchmark_v3.lowqps_sample.json",
    ]
    .iter()
    .map(|n| data(n))
    .collect();
    let c = calibrate::calibrate(&files, &CalibrateOptions::default()).unwrap();
    let g = |n: &str| c.file.groups.iter().find(|g| g.group == n).unwrap().clone();
    // A 1k-token prefill is tens of ms in every source (≥ 16.9 ms at peak FLOP/s).
    for n in ["llmservingsim", "aiconfigurator"] {
        let t = g(n).prefill_1k_ms.unwrap();
        assert!((16.9..60.0).contains(&t), "{n}: {t}");
    }
    // A 64-sequence decode step is at least the weight-read floor.
    for n in ["aiconfigurator", "vllm-ppd-interference"] {
        let t = g(n).decode_64x1k_ms.unwrap();
        assert!((4.79..40.0).contains(&t), "{n}: {t}");
    }
    // Kernel profiles get their own intercept; the engine's β0 comes from the vLLM TPOTs.
    assert_eq!(c.file.iteration.kernel_group_intercepts.len(), 2);
}

#[test]
fn v3_turn1_tpot_comes_from_the_median_request_not_the_means() {
    // S_a replication: p50 E2E 2,162.867 ms, p50 TTFT 91.036 ms over 255 decode steps (256
    // outputs): 8.1248 ms. The means (2,026.603 and 92.329 ms) would give 7.5854 ms: some
    // answers stop at end-of-sequence before max_tokens and pull the mean E2E down.
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/measurements/vllm-ppd_replication_benchmark_v3.lowqps_sample.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let points = ppdsim::validate::low_qps::read_lowqps(&path, &v).unwrap();
    let s = points
        .iter()
        .find(|p| p.workload == "S_a" && p.mode == "replication")
        .unwrap();
    assert_eq!(s.shape[1], 256);
    let want = (2162.866953139504 - 91.03551506996155) / 255.0;
    assert!((s.t1_tpot_ms - want).abs() < 1e-9, "{}", s.t1_tpot_ms);
    assert!((want - 8.1248).abs() < 1e-4);
}
