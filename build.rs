//! Build script: converts the model and GPU table `src/specs.toml` into JSON in `OUT_DIR`, which
//! `src/hardware.rs` compiles in and reads at run time. TOML stays the file people edit (with
//! comments and each entry's source); JSON is what the program parses: serde_json reads the
//! table in 17–30 µs where the `toml` crate took 0.25–0.30 ms of every command's start (a
//! temporary example timing the first `hardware::models()`, 8 runs each, Vidur's run's machine,
//! 2026-12-07), before the scenario could be read. The conversion keeps every value's type as TOML gives it (strings,
//! integers, floats), so `hardware.rs` deserialises exactly what it would from the TOML, and
//! its `deny_unknown_fields` checks still apply.

use std::path::PathBuf;

fn main() {
    let src = "src/specs.toml";
    println!("cargo:rerun-if-changed={src}");
    println!("cargo:rerun-if-changed=build.rs");
    let text = std::fs::read_to_string(src).unwrap_or_else(|e| panic!("reading {src}: {e}"));
    let table: toml::Table = toml::from_str(&text).unwrap_or_else(|e| panic!("{src} does not parse as TOML: {e}"));
    let json = serde_json::to_string(&table).unwrap_or_else(|e| panic!("{src} does not convert to JSON: {e}"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("specs.json");
    std::fs::write(&out, json).unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
}
