//! Seed 000's P-PD experiment framework result JSON.
//!
//! ```json
//! {"config": {"model": "meta-llama/Llama-3.1-8B-Instruct", ...},
//!  "results": [{"test_case": {"context_length": 512, "append_length": 8, "cache_rate": 0.984},
//!               "metrics": {"ttft_ms": 20.9, "e2e_latency_ms": 42.5, "tpot_ms": 5.3, ...}}]}
//! ```
//! Required per result: `test_case.context_length` (`L`), `test_case.append_length` (`m`) and
//! `metrics.ttft_ms`; `cache_rate`, `e2e_latency_ms`, `tpot_ms` and other metrics are optional
//! (a stated `cache_rate` must agree with `L/(L+m)` within 0.01). A result whose metrics carry
//! `success: false` or `error` is dropped and counted. Each result is a direct [`RequestSample`]:
//! one append-prefill of `m` tokens on `L` cached (the framework warms the prefix first), so
//! TTFT = fixed overhead + one iteration. `config.model` selects the model when present.

use super::{get_f64, model_name_from, FileSamples, ReadOptions, RequestRoute, RequestSample};
use crate::cost_model::PrefillPart;
use crate::error::{InputError, InputResult};
use serde_json::Value;
use std::path::Path;

/// True when `v` looks like a framework result.
pub fn detect(v: &Value) -> bool {
    v.get("results").and_then(|r| r.as_array()).is_some_and(|r| {
        !r.is_empty()
            && r.iter()
                .all(|x| x.get("test_case").is_some() && x.get("metrics").is_some())
    })
}

/// Reads the file.
///
/// # Errors
/// Missing `results`, a result without `context_length`/`append_length`/`ttft_ms`, or an
/// inconsistent `cache_rate`.
pub fn read(path: &Path, v: &Value, _opts: &ReadOptions) -> InputResult<FileSamples> {
    let results = v
        .get("results")
        .and_then(|r| r.as_array())
        .ok_or_else(|| InputError::key(path, "results", "missing array"))?;
    let model = v
        .get("config")
        .and_then(|c| c.get("model"))
        .and_then(|m| m.as_str())
        .and_then(model_name_from);
    let mut out = FileSamples {
        reader: "ppd-framework",
        group: format!(
            "ppd-framework:{}",
            path.file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default()
        ),
        model,
        used_for: "append-prefill TTFTs at low load (marginal prefill cost, request overhead)".into(),
        ..Default::default()
    };
    for (i, r) in results.iter().enumerate() {
        let at = format!("results[{i}]");
        let tc = r
            .get("test_case")
            .ok_or_else(|| InputError::key(path, &format!("{at}.test_case"), "missing"))?;
        let m = r
            .get("metrics")
            .ok_or_else(|| InputError::key(path, &format!("{at}.metrics"), "missing"))?;
        if m.get("success").and_then(|s| s.as_bool()) == Some(false) || m.get("error").is_some_and(|e| !e.is_null()) {
            out.num_dropped += 1;
            continue;
        }
        let l = get_f64(path, tc, "context_length", &format!("{at}.test_case"))? as u32;
        let a = get_f64(path, tc, "append_length", &format!("{at}.test_case"))? as u32;
        if a == 0 {
            return Err(InputError::key(
                path,
                &format!("{at}.test_case.append_length"),
                "must be >= 1",
            ));
        }
        if let Some(r) = tc.get("cache_rate").and_then(|x| x.as_f64()) {
            let expect = l as f64 / (l + a) as f64;
            if (r - expect).abs() > 0.01 {
                return Err(InputError::key(
                    path,
                    &format!("{at}.test_case.cache_rate"),
                    format!("{r} disagrees with L/(L+m) = {expect:.3}"),
                ));
            }
        }
        let ttft = get_f64(path, m, "ttft_ms", &format!("{at}.metrics"))?;
        out.requests.push(RequestSample {
            route: RequestRoute::Direct,
            steps: vec![PrefillPart {
                num_new_tokens: a,
                num_cached_tokens: l,
            }],
            kv_tokens: 0,
            measured_ttft_ms: ttft,
            label: format!("L={l} m={a}"),
        });
    }
    Ok(out)
}
