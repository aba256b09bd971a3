//! ShareGPT import against independently computed token counts.
//!
//! `tests/data/sharegpt_fixture.json` holds 4 conversations copied unchanged from
//! `sharegpt_v3_multiturn_sample3000.json.gz` (see tests/data/README.md). The expected turns in
//! `sharegpt_fixture.expected.jsonl` were computed with OpenAI's Python `tiktoken` 0.14
//! (`cl100k_base`, `encode_ordinary`) and a separate Python implementation of the turn rules.

use ppdsim::trace::{sharegpt, Conversation};
use std::path::PathBuf;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

fn expected() -> Vec<Conversation> {
    std::fs::read_to_string(data("sharegpt_fixture.expected.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn token_counts_match_independent_tiktoken() {
    let (convs, report) = sharegpt::import(&data("sharegpt_fixture.json")).unwrap();
    assert_eq!(convs, expected());
    assert_eq!(report.elements_read, 4);
    assert!(!report.truncated_tail);
    assert_eq!(report.leading_assistant_messages_dropped, 2);
    assert_eq!(report.empty_messages_dropped, 1);
    assert_eq!(report.system_messages_folded, 1);
}

#[test]
fn truncated_file_keeps_every_complete_conversation() {
    let text = std::fs::read(data("sharegpt_fixture.json")).unwrap();
    // Cut inside the last conversation's text.
    let cut = text.len() - 200;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("truncated.json");
    std::fs::write(&p, &text[..cut]).unwrap();
    let (convs, report) = sharegpt::import(&p).unwrap();
    assert!(report.truncated_tail);
    assert_eq!(report.elements_read, 3);
    assert_eq!(convs, expected()[..3].to_vec());
    // Also through gzip, cut mid-stream.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &text[..cut]).unwrap();
    let bytes = gz.finish().unwrap();
    let pg = dir.path().join("truncated.json.gz");
    std::fs::write(&pg, &bytes[..bytes.len() - 10]).unwrap();
    let (convs_gz, report_gz) = sharegpt::import(&pg).unwrap();
    assert!(report_gz.truncated_tail);
    assert_eq!(convs_gz, expected()[..3].to_vec());
}

#[test]
fn not_an_array_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.json");
    std::fs::write(&p, "{\"id\": 1}").unwrap();
    let e = sharegpt::import(&p).unwrap_err().to_string();
    assert!(e.contains("x.json") && e.contains("expected a JSON array"), "{e}");
}

#[test]
fn mooncake_import_matches_an_independent_reconstruction() {
    // tests/data/mooncake_fixture.jsonl: the first 300 requests of Mooncake's conversation trace;
    // the expected native trace was computed by a separate Python implementation of the rules in
    // src/trace/mooncake.rs (tests/data/README.md).
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t.jsonl");
    assert_cmd::Command::cargo_bin("ppdsim")
        .unwrap()
        .args(["trace", "import", "mooncake"])
        .arg(data("mooncake_fixture.jsonl"))
        .arg("-o")
        .arg(&out)
        .assert()
        .success()
        .stdout(predicates::str::contains(
            "read 300 requests, wrote 281 conversations (18 with ≥ 2 turns, up to 3 turns)",
        ))
        .stdout(predicates::str::contains(
            "19 continuations, 0 branches started anew, 3 turns",
        ));
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        std::fs::read_to_string(data("mooncake_fixture.expected.jsonl")).unwrap()
    );
}
