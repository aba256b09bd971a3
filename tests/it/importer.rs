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
        .stderr(predicates::str::contains(
            "read 300 requests, wrote 281 conversations (18 with ≥ 2 turns, up to 3 turns)",
        ))
        .stderr(predicates::str::contains(
            "19 continuations, 0 branches started anew, 3 turns",
        ))
        // The report is machine-readable JSON on stdout, as `trace stats` writes its statistics.
        .stdout(predicates::prelude::PredicateBooleanExt::and(
            predicates::str::starts_with("{\n"),
            predicates::str::contains("\"requests_read\": 300"),
        ));
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        std::fs::read_to_string(data("mooncake_fixture.expected.jsonl")).unwrap()
    );
}

/// The five conversations the first five requests of Azure's conversation trace make (hand
/// computed: arrival = timestamp − 18:15:46.6805900).
fn azure_head_expected(prefix: &str) -> Vec<Conversation> {
    let rows = [
        (0.0, 374, 44),
        (4.314579, 396, 109),
        (4.541877, 879, 55),
        (4.710427, 91, 16),
        (5.892655, 91, 16),
    ];
    rows.iter()
        .enumerate()
        .map(|(i, &(t, u, a))| Conversation {
            id: format!("{prefix}-{}", i + 1).into(),
            turns: vec![ppdsim::trace::Turn {
                user_tokens: u,
                assistant_tokens: a,
            }]
            .into(),
            arrival_s: Some(t),
        })
        .collect()
}

#[test]
fn azure_and_vidur_requests_become_timed_one_turn_conversations() {
    use ppdsim::trace::requests::{import_azure, import_vidur};
    // CRLF line ends, no newline after the last row: the Azure file as published.
    let (convs, report) = import_azure(&data("azure_conv_head.csv")).unwrap();
    assert_eq!(convs, azure_head_expected("azure"));
    assert_eq!((report.rows_read, report.rows_without_output), (5, 0));
    assert!((report.span_s.unwrap() - 5.892655).abs() < 1e-12);
    // Vidur's processed copy of the same trace gives the same requests at the same times.
    let (convs, _) = import_vidur(&data("vidur_splitwise_conv_head.csv")).unwrap();
    assert_eq!(convs, azure_head_expected("vidur"));
    // A Vidur trace without `arrived_at`: untimed, extra columns ignored.
    let (convs, report) = import_vidur(&data("vidur_arxiv_head.csv")).unwrap();
    assert_eq!(report.span_s, None);
    let shape: Vec<(u32, u32, Option<f64>)> = convs
        .iter()
        .map(|c| (c.turns[0].user_tokens, c.turns[0].assistant_tokens, c.arrival_s))
        .collect();
    assert_eq!(shape, [(3772, 54, None), (2015, 156, None), (3858, 133, None)]);
}

#[test]
fn per_request_traces_are_ordered_by_time_and_bad_rows_are_refused_by_line() {
    use ppdsim::trace::requests::{import_azure, import_vidur};
    let dir = tempfile::tempdir().unwrap();
    let head = std::fs::read_to_string(data("azure_conv_head.csv")).unwrap();
    let lines: Vec<&str> = head.split("\r\n").collect();
    // Rows out of order, and one without output: sorted by time (ties keep file order), the
    // zero-output row dropped and counted, ids keep the file row.
    let shuffled = [
        lines[0],
        lines[3],
        lines[1],
        "2023-11-16 18:15:47.0000000,10,0",
        lines[2],
    ]
    .join("\n");
    let p = dir.path().join("shuffled.csv");
    std::fs::write(&p, shuffled).unwrap();
    let (convs, report) = import_azure(&p).unwrap();
    let ids: Vec<&str> = convs.iter().map(|c| &*c.id).collect();
    assert_eq!(ids, ["azure-2", "azure-4", "azure-1"]);
    assert_eq!(convs[0].arrival_s, Some(0.0));
    assert!((convs[2].arrival_s.unwrap() - 4.541877).abs() < 1e-12);
    assert_eq!((report.rows_read, report.rows_without_output), (4, 1));
    // Malformed input: the file, the line and the problem are named.
    for (name, text, needle) in [
        (
            "bad_time.csv",
            format!("{}\r\n2023-11-16 18:61:46.68,374,44", lines[0]),
            "bad_time.csv:2: TIMESTAMP `2023-11-16 18:61:46.68`",
        ),
        (
            "bad_count.csv",
            format!("{}\r\n{}\r\n2023-11-16 18:15:47,-3,44", lines[0], lines[1]),
            "bad_count.csv:3: ContextTokens `-3` is not a token count",
        ),
        (
            "no_column.csv",
            "TIMESTAMP,ContextTokens\r\n2023-11-16 18:15:47,3".to_string(),
            "no column `GeneratedTokens`",
        ),
        ("empty.csv", lines[0].to_string(), "no requests"),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        let e = import_azure(&p).unwrap_err().to_string();
        assert!(e.contains(name) && e.contains(needle), "{e}");
    }
    let p = dir.path().join("vidur_bad.csv");
    std::fs::write(
        &p,
        "arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,374,44\n-1.0,396,109\n",
    )
    .unwrap();
    let e = import_vidur(&p).unwrap_err().to_string();
    assert!(e.contains("vidur_bad.csv:3: arrived_at `-1.0`"), "{e}");
}

#[test]
fn committed_azure_trace_has_the_published_arrival_statistics() {
    // traces/azure-conv-2023.jsonl.gz, imported from AzureLLMInferenceTrace_conv.csv; the figures
    // are those the data's README lists (computed independently of ppdsim).
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let convs = ppdsim::trace::read_trace(&root.join("traces/azure-conv-2023.jsonl.gz")).unwrap();
    let s = ppdsim::trace::stats(&convs);
    assert_eq!((s.num_conversations, s.num_turns), (19_366, 19_366));
    let a = s.arrivals.expect("timed trace");
    assert!((a.span_s - 3501.7).abs() < 0.05, "{}", a.span_s);
    assert!((a.mean_rate_per_s - 5.53).abs() < 0.005);
    assert!((a.interarrival_cv - 1.09).abs() < 0.005);
    assert!((a.interarrival_ms.p50 - 118.4).abs() < 0.05 && (a.interarrival_ms.max - 4314.6).abs() < 0.05);
    assert!((s.user_tokens.mean - 1155.0).abs() < 0.5 && s.user_tokens.p50 == 1020.0 && s.user_tokens.max == 14_050.0);
    assert!((s.assistant_tokens.mean - 211.0).abs() < 0.5 && s.assistant_tokens.p99 == 601.0);
}
