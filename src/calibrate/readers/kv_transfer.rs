//! KV-transfer measurement tables (the Mooncake documentation's vLLM and SGLang PD tables).
//!
//! Columns used: `source_table` (group), `model`, `gpu`, `prompt_len_tokens`, `kv_bytes_approx`
//! \[B\], `transfer_time_ms` \[ms\]. Each row is a [`TransferSample`] (fits a link's latency and
//! bandwidth) and a [`KvStatement`] (bytes for `prompt_len_tokens`, checked against the model).

use super::{col_f64, col_str, csv_rows, model_name_from, FileSamples, KvStatement, TransferSample};
use crate::error::{InputError, InputResult};
use std::path::Path;

/// Reads the table: one [`FileSamples`] per `source_table` (each is its own setup).
///
/// # Errors
/// Missing columns, non-numeric cells, empty tables.
pub fn read(path: &Path, text: &str) -> InputResult<Vec<FileSamples>> {
    let (header, rows) = csv_rows(path, text)?;
    let mut tables: Vec<FileSamples> = Vec::new();
    for row in &rows {
        let table = col_str(path, &header, row, "source_table")?;
        let model = col_str(path, &header, row, "model")?;
        let gpu = col_str(path, &header, row, "gpu")?;
        let tokens = col_f64(path, &header, row, "prompt_len_tokens")? as u64;
        let tp = col_f64(path, &header, row, "tp_per_instance")? as u32;
        let bytes = col_f64(path, &header, row, "kv_bytes_approx")? as u64;
        let ms = col_f64(path, &header, row, "transfer_time_ms")?;
        let group = format!("kv-transfer:{table}");
        if tables.last().is_none_or(|t| t.group != group) {
            tables.push(FileSamples {
                reader: "kv-transfer-table",
                group,
                used_for: "KV link latency and bandwidth; KV size check".into(),
                ..Default::default()
            });
        }
        let out = tables.last_mut().expect("pushed");
        out.model = model_name_from(model);
        out.gpu = match gpu.to_ascii_lowercase() {
            g if g.starts_with("h800") => Some("h800-sxm".into()),
            g if g.starts_with("h20") => Some("h20".into()),
            g if g.starts_with("h100") => Some("h100-sxm".into()),
            _ => None,
        };
        if ms <= 0.0 {
            out.num_dropped += 1;
            continue;
        }
        out.transfers.push(TransferSample {
            bytes,
            measured_ms: ms,
            label: format!("{table} {model} {tokens} tokens"),
        });
        out.kv_statements.push(KvStatement {
            tokens,
            bytes,
            tp,
            label: format!("{table} {model} {tokens} tokens"),
        });
    }
    if tables.iter().all(|t| t.transfers.is_empty()) {
        return Err(InputError::file(path, "no transfer rows"));
    }
    Ok(tables)
}
