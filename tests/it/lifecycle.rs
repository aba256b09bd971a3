//! Request lifecycles with a constant-time cost model, timings computed by hand.
//!
//! Setup shared by every test (all times in µs):
//! * every iteration takes 10 ms; request overhead 2 ms; PD handoff 3 ms;
//! * KV link 8 Gbit/s (= 1 B/ns = 1,000,000 B/ms) with 1 ms latency; KV 131,072 B/token;
//! * one conversation starting at 0: turn 1 = 100 user → 3 answer tokens, think 1 s,
//!   turn 2 = 20 user → 2 answer tokens; no template tokens; block size 16.

use ppdsim::cluster::Shape;
use ppdsim::cost_model::ConstantCostModel;
use ppdsim::metrics::{RequestRecord, RouteKind};
use ppdsim::policy::RouterConfig;
use ppdsim::sim::instance::EngineLimits;
use ppdsim::sim::workload::{LaterTurn, TimedConversation};
use ppdsim::sim::{Event, SimConfig, Simulation, TransferMode};
use ppdsim::time::{SimDuration, SimTime};
use ppdsim::trace::Turn;

const KV: u64 = 131_072;

/// A router and the shape of the cluster it runs on.
pub type Deploy = (RouterConfig, Shape);

/// The router written as TOML (`kind = "pd"`) on a cluster of vllm-ppd shape `shape` (`1P_1pD`).
pub fn on(router: &str, shape: &str) -> Deploy {
    (
        toml::from_str(router).expect("a router table"),
        Shape::parse(shape).expect("a cluster shape"),
    )
}

pub fn config((router, shape): Deploy, token_budget: u32) -> SimConfig {
    SimConfig {
        name: router.name(),
        router,
        shape,
        limits: EngineLimits {
            token_budget,
            max_num_seqs: 64,
            block_size: 16,
            capacity_blocks: 100_000,
            cache_answers: true,
            answer_mismatch_per_token: 0.0,
            incremental_kv: true,
            cascade_attention: false,
        },
        kv_bytes_per_token: KV,
        link_bandwidth_gbps: 8.0,
        link_latency_ms: 1.0,
        transfer: TransferMode::Full,
        prefill_waits_for_send: false,
        kv_load_ms: 0.0,
        request_overhead_ms: 2.0,
        pd_handoff_ms: 3.0,
        pd_handoff_p_service_ms: 3.0,
        pd_handoff_d_service_ms: 0.0,
        pd_handoff_queue: ppdsim::sim::HandoffQueue::PerPrefill,
        request_service_ms: 2.0,
        prompt_ms_per_token: 0.0,
        template_tokens_per_message: 0,
        serialized_overheads: true,
        client_max_connections: None,
        client_requeue_rate: 0.0,
        stream_ms_per_chunk: 0.0,
        engine_admit_ms: 0.0,
        request_timeout_s: None,
        pinning: ppdsim::sim::Pinning::Hash,
        max_model_len: None,
        affinity_miss_rate: 0.0,
        routing_seed: 0,
        overhead_service_cv: 0.0,
        decode_runs: false,
    }
}

fn conversation() -> Vec<TimedConversation> {
    vec![TimedConversation {
        id: "c0".into(),
        start_at: SimTime::ZERO,
        turns: vec![
            Turn {
                user_tokens: 100,
                assistant_tokens: 3,
            },
            Turn {
                user_tokens: 20,
                assistant_tokens: 2,
            },
        ]
        .into(),
        later_turns: LaterTurn::after_each([SimDuration::from_secs_f64(1.0)]),
        shared_prefix: None,
    }]
}

/// `n` copies of [`conversation`], named `c0`, `c1`, …, starting `gap_s` seconds apart.
fn staggered(n: usize, gap_s: f64) -> Vec<TimedConversation> {
    (0..n)
        .map(|i| {
            let mut c = conversation().remove(0);
            c.id = format!("c{i}").into();
            c.start_at = SimTime::ZERO + SimDuration::from_secs_f64(i as f64 * gap_s);
            c
        })
        .collect()
}

fn run(policy: Deploy, budget: u32) -> Vec<RequestRecord> {
    run_cfg(config(policy, budget), conversation())
}

fn pd() -> Deploy {
    on(r#"kind = "pd""#, "1P_1pD")
}
fn ppd() -> Deploy {
    on(r#"kind = "ppd""#, "1P_1pD")
}

fn replication(instances: u32) -> Deploy {
    on(r#"kind = "replication""#, &format!("{instances}R"))
}

fn close(a: f64, b: f64) {
    assert!((a - b).abs() < 1e-9, "{a} != {b}");
}

#[test]
fn pd_two_turns_by_hand() {
    let r = run(pd(), 8192);
    assert_eq!(r.len(), 2);
    // Turn 1: P enqueue 2 ms, P step 2→12 ms, transfer 100·131072 B = 13.1072 ms + 1 ms → 14.107 ms
    // (rounded to µs) → 26.107, handoff 3 ms → D enqueue 29.107, D computes the last prompt token
    // 29.107→39.107 (first token), two decode steps → 59.107.
    let t1 = &r[0];
    assert_eq!(t1.route, RouteKind::Split);
    close(t1.ttft_ms, 39.107);
    close(t1.tpot_ms.unwrap(), 10.0);
    close(t1.e2e_ms, 59.107);
    assert_eq!(t1.kv_transfer_bytes, 100 * KV);
    close(t1.kv_transfer_ms, 14.107);
    assert_eq!(
        (t1.num_cached_tokens, t1.num_transferred_tokens, t1.num_computed_tokens),
        (0, 99, 100)
    );
    // Turn 2 arrives 1 s after 59.107 ms. Prompt = L + m = 103 + 20 = 123. P's cache holds the
    // turn-1 prompt (100 tokens → 96 in whole blocks), so P computes 27: 1061.107→1071.107.
    // Transfer 123·131072 B = 16.121856 ms + 1 ms → 17.122 ms → 1088.229; handoff → 1091.229;
    // D step → 1101.229 (first token); one decode → 1111.229.
    let t2 = &r[1];
    close(t2.arrived_at_ms, 1059.107);
    assert_eq!(t2.num_context_tokens, 103);
    assert_eq!(t2.num_prompt_tokens, 123);
    assert_eq!(
        t2.kv_transfer_bytes,
        (103 + 20) * KV,
        "PD moves (L+m)·131072 bytes on turn 2"
    );
    close(t2.ttft_ms, 42.122);
    close(t2.tpot_ms.unwrap(), 10.0);
    close(t2.e2e_ms, 52.122);
    assert_eq!(t2.num_cached_tokens, 96);
    assert_eq!(t2.num_computed_tokens, 27);
    // D held 102 tokens (prompt 100 + 3 outputs − 1) → 96 in blocks locally; 26 more came over the link.
    assert_eq!(t2.num_transferred_tokens, 122 - 96);
}

#[test]
fn ppd_two_turns_by_hand() {
    let r = run(ppd(), 8192);
    // Turn 1 is PD's.
    close(r[0].ttft_ms, 39.107);
    close(r[0].e2e_ms, 59.107);
    // Turn 2 goes straight to D: enqueue at +2 ms, append-prefill of 123 − 96 = 27 tokens for
    // 10 ms (first token at +12 ms), one decode step (+22 ms). No KV moves.
    let t2 = &r[1];
    assert_eq!(t2.route, RouteKind::Local);
    assert_eq!(t2.kv_transfer_bytes, 0, "PPD moves no KV on turn 2");
    close(t2.ttft_ms, 12.0);
    close(t2.tpot_ms.unwrap(), 10.0);
    close(t2.e2e_ms, 22.0);
    assert_eq!((t2.num_cached_tokens, t2.num_computed_tokens), (96, 27));
}

#[test]
fn replication_two_turns_by_hand() {
    let r = run(replication(2), 8192);
    // Turn 1: enqueue 2, prefill 2→12 (first token), decodes → 22, 32.
    close(r[0].ttft_ms, 12.0);
    close(r[0].tpot_ms.unwrap(), 10.0);
    close(r[0].e2e_ms, 32.0);
    // Turn 2 at 1032 ms: same instance, 96 cached, first token at +12, done at +22.
    close(r[1].arrived_at_ms, 1032.0);
    close(r[1].ttft_ms, 12.0);
    close(r[1].e2e_ms, 22.0);
    assert_eq!(r[0].decode_instance, r[1].decode_instance, "conversations are sticky");
    assert_eq!(r[1].num_cached_tokens, 96);
}

#[test]
fn adaptive_threshold_picks_local_or_split() {
    // D holds 102 tokens of the 123-token prompt: m = 21.
    let adaptive = |max_local_append_tokens| {
        let router = RouterConfig::Adaptive {
            name: None,
            clusters: vec![],
            max_local_append_tokens,
            min_cache_rate: 0.3,
            hysteresis: None,
        };
        (router, Shape::parse("1P_1pD").unwrap())
    };
    let local = run(adaptive(22), 8192);
    close(local[1].ttft_ms, 12.0);
    assert_eq!(local[1].route, RouteKind::Local);
    let split = run(adaptive(21), 8192);
    close(split[1].ttft_ms, 42.122);
    assert_eq!(split[1].route, RouteKind::Split);
}

#[test]
fn hysteresis_sends_turns_remote_while_the_backlog_is_high() {
    // Four copies of the two-turn conversation start together; with overheads as pure delays and
    // an instant link (no FIFO stagger) their turn-1s run in lockstep, so their turn-2s reach the router at one
    // instant, in conversation order. Each turn 2 leaves m = 21 uncached tokens on D (D holds 102
    // of 123), and none has its first token yet when the next is routed: the backlog each sees is
    // 0, 21, 42, 63. Levels high 42 / low 21: local, local, then remote (42 ≥ 42) and remote (63
    // is above low). A fifth conversation, 0.5 s later, finds the backlog drained (0 ≤ 21): local.
    let adaptive = |hysteresis| {
        let router = RouterConfig::Adaptive {
            name: None,
            clusters: vec![],
            max_local_append_tokens: 1000,
            min_cache_rate: 0.0,
            hysteresis,
        };
        (router, Shape::parse("1P_1pD").unwrap())
    };
    let convs = || -> Vec<TimedConversation> {
        (0..5)
            .map(|i| {
                let mut c = conversation().remove(0);
                c.id = format!("c{i}").into();
                c.start_at = SimTime::ZERO + SimDuration::from_secs_f64(if i == 4 { 0.5 } else { 0.0 });
                c
            })
            .collect()
    };
    let turn2_routes = |hysteresis| -> Vec<RouteKind> {
        let mut cfg = config(adaptive(hysteresis), 8192);
        cfg.serialized_overheads = false;
        cfg.link_bandwidth_gbps = 1e6;
        cfg.link_latency_ms = 0.0;
        let r = run_cfg(cfg, convs());
        let t2: Vec<&RequestRecord> = r.iter().filter(|x| x.turn == 2).collect();
        // Lockstep check: the four simultaneous turn-2s arrive at one instant.
        assert!(t2[..4].iter().all(|x| x.arrived_at_ms == t2[0].arrived_at_ms));
        assert!(t2.iter().all(|x| x.num_prompt_tokens == 123));
        let mut by_conv: Vec<(String, RouteKind)> =
            t2.iter().map(|x| (x.conversation_id.to_string(), x.route)).collect();
        by_conv.sort_by(|a, b| a.0.cmp(&b.0));
        by_conv.into_iter().map(|(_, k)| k).collect()
    };
    use RouteKind::{Local as L, Split as S};
    assert_eq!(turn2_routes(None), [L, L, L, L, L]);
    let levels = ppdsim::policy::Hysteresis {
        high_backlog_tokens: 42,
        low_backlog_tokens: 21,
    };
    assert_eq!(turn2_routes(Some(levels)), [L, L, S, S, L]);
}

#[test]
fn chunked_prefill_splits_by_token_budget() {
    // Budget 64: turn 1's 100-token prompt takes two iterations (64 + 36): first token at 2 + 20 ms.
    let r = run(replication(1), 64);
    close(r[0].ttft_ms, 22.0);
    close(r[0].e2e_ms, 42.0);
}

#[test]
fn incremental_transfer_sends_only_missing_tokens() {
    let mut cfg = config(pd(), 8192);
    cfg.transfer = TransferMode::Incremental;
    let r = run_cfg(cfg, conversation());
    // Turn 2: D holds 102 of 123 tokens → 21 tokens sent.
    assert_eq!(r[1].kv_transfer_bytes, 21 * KV);
}

#[test]
fn pd_turn1_event_sequence_step_by_step() {
    let cost = ConstantCostModel { step_ms: 10.0 };
    let mut sim = Simulation::new(config(pd(), 8192), &cost, conversation());
    let mut seen = Vec::new();
    while let Some((t, e)) = sim.step() {
        seen.push((t.0, e));
        if seen.len() == 9 {
            break;
        }
    }
    // The handoff (3 ms, all of it P's serialized share) reaches D's API server at 29.107 ms,
    // which (D's share 0 ms) enqueues it at once.
    let expect = vec![
        (0, Event::ConversationStart { conv: 0 }),
        (2_000, Event::Enqueue { inst: 0, req: 0 }),
        (12_000, Event::StepDone { inst: 0 }),
        (26_107, Event::KvTransferDone { req: 0 }),
        (29_107, Event::HandoffAtDecode { req: 0 }),
        (29_107, Event::Enqueue { inst: 1, req: 0 }),
        (39_107, Event::StepDone { inst: 1 }),
        (49_107, Event::StepDone { inst: 1 }),
        (59_107, Event::StepDone { inst: 1 }),
    ];
    assert_eq!(seen, expect);
    // After turn 1 completes, P caches the 100-token prompt and D the 102 tokens it holds.
    assert_eq!(sim.instances()[0].cached_tokens(0), 100);
    assert_eq!(sim.instances()[1].cached_tokens(0), 102);
    assert_eq!(sim.now(), SimTime(59_107));
}

fn one_turn(n: usize) -> Vec<TimedConversation> {
    (0..n)
        .map(|i| TimedConversation {
            id: format!("c{i}").into(),
            start_at: SimTime::ZERO,
            turns: vec![Turn {
                user_tokens: 100,
                assistant_tokens: 3,
            }]
            .into(),
            later_turns: Box::new([]),
            shared_prefix: None,
        })
        .collect()
}

/// One mixed instance whose overheads are pure delays (2 ms).
fn one_instance_without_queues() -> SimConfig {
    let mut cfg = config(replication(1), 8192);
    cfg.serialized_overheads = false;
    cfg
}

fn run_cfg(cfg: SimConfig, convs: Vec<TimedConversation>) -> Vec<RequestRecord> {
    let cost = ConstantCostModel { step_ms: 10.0 };
    Simulation::new(cfg, &cost, convs).run().records
}

#[test]
fn serialized_request_overhead_queues_a_burst() {
    let rep1 = replication(1);
    // Serialized: A enqueued at 2 ms, B at 4 ms (the API server handles one request at a time).
    // A's prefill 2→12; B joins the next iteration 12→22 (with A's decode): B's TTFT is 22 ms.
    let r = run_cfg(config(rep1.clone(), 8192), one_turn(2));
    close(r[0].ttft_ms, 12.0);
    close(r[1].ttft_ms, 22.0);
    // As pure delays both arrive at 2 ms and share the first iteration.
    let mut cfg = config(rep1, 8192);
    cfg.serialized_overheads = false;
    let r = run_cfg(cfg, one_turn(2));
    close(r[0].ttft_ms, 12.0);
    close(r[1].ttft_ms, 12.0);
}

#[test]
fn pd_handoff_serializes_per_p_instance_only() {
    // Two conversations at once on 2 P + 2 D, each turn 100 → 3 tokens; P's API server takes 2 ms
    // per request (serialized per instance), prefill 10 ms, KV link 1 ms + 13.107 ms, handoff 3 ms
    // of P-side work, D's 1-token step 10 ms.
    let pd = on(r#"kind = "pd""#, "2P_2pD");
    let (mut apart, mut together) = (None, None);
    for seed in 0..64 {
        let mut cfg = config(pd.clone(), 8192);
        cfg.routing_seed = seed;
        let r = run_cfg(cfg, one_turn(2));
        let mut ttfts: Vec<f64> = r.iter().map(|x| x.ttft_ms).collect();
        ttfts.sort_by(f64::total_cmp);
        if r[0].prefill_instance != r[1].prefill_instance {
            apart.get_or_insert(ttfts);
        } else {
            together.get_or_insert(ttfts);
        }
    }
    // On separate P instances nothing is shared: enqueued at 2, prefills 2→12, transfers 12→26.107
    // on separate links, handoffs 26.107→29.107 in parallel, D's step 29.107→39.107 (both).
    let apart = apart.expect("some placement uses both P instances");
    close(apart[0], 39.107);
    close(apart[1], 39.107);
    // On one P: its API server admits B at 4, B prefills 12→22, its transfer waits for A's
    // (26.107→40.214) and its handoff for A's (P0's handoff server is free from 29.107): D gets B
    // at 43.214, first token at 53.214.
    let together = together.expect("some placement shares one P instance");
    close(together[0], 39.107);
    close(together[1], 53.214);
}

#[test]
fn pd_handoff_in_p_s_engine_delays_its_next_prefill() {
    // Two conversations at once on 1 P + 1 D (each turn 100 → 3 tokens), a link of 1 ms and no
    // bandwidth cost, a 3 ms handoff that is all P-side work. P's API server enqueues A at 2 ms
    // and B at 4 ms; every step takes 10 ms.
    let both = |queue| {
        let mut cfg = config(pd(), 8192);
        cfg.pd_handoff_queue = queue;
        cfg.link_bandwidth_gbps = 1e6;
        let r = run_cfg(cfg, one_turn(2));
        (r[0].ttft_ms, r[1].ttft_ms)
    };
    // P's engine does the handoff: A's step 2→15 (10 + 3), B's 15→28; transfers 15→16 and
    // 28→29. D: A's last prompt token 16→26, its decodes 26→36→46; B joins the step after it
    // arrives, 36→46.
    let (a, b) = both(ppdsim::sim::HandoffQueue::PrefillEngine);
    close(a, 26.0);
    close(b, 46.0);
    // A queue beside the engine: P's steps 2→12 and 12→22, transfers 12→13 and 22→23, handoffs
    // 13→16 and 23→26; B joins D's step 26→36.
    let (a, b) = both(ppdsim::sim::HandoffQueue::PerPrefill);
    close(a, 26.0);
    close(b, 36.0);
}

#[test]
fn p_s_engine_waiting_for_its_kv_sends_delays_its_next_prefill() {
    // Two conversations at once on 1 P + 1 D (each turn 100 → 3 tokens; 13,107,200 B of KV), the
    // link's 8 Gbit/s (1,000,000 B/ms) + 1 ms: 14.107 ms per transfer (µs clock). A 3 ms
    // handoff, all P-side work in a queue beside P's engine. P's API server enqueues A at 2 ms
    // and B at 4 ms; every step takes 10 ms.
    let both = |waits| {
        let mut cfg = config(pd(), 8192);
        cfg.prefill_waits_for_send = waits;
        let r = run_cfg(cfg, one_turn(2));
        assert_eq!(r[0].kv_transfer_bytes, 13_107_200);
        (r[0].ttft_ms, r[1].ttft_ms, r[0].kv_transfer_ms, r[1].kv_transfer_ms)
    };
    // Transfers beside the engine: P's steps 2→12 and 12→22; A's transfer 12→26.107, B's waits
    // for the link, 26.107→40.214; handoffs 26.107→29.107 and 40.214→43.214. D: A's last
    // prompt token 29.107→39.107, its decodes →49.107→59.107; B joins the step after it
    // arrives, 49.107→59.107.
    let (a, b, ta, tb) = both(false);
    close(a, 39.107);
    close(b, 59.107);
    close(ta, 14.107);
    close(tb, 40.214 - 22.0);
    // P's engine waits for each send: A's step 2→26.107 (10 + 14.107), B's 26.107→50.214;
    // handoffs 26.107→29.107 and 50.214→53.214. A is unchanged; B reaches D during A's last
    // decode and runs 59.107→69.107.
    let (a, b, ta, tb) = both(true);
    close(a, 39.107);
    close(b, 69.107);
    close(ta, 14.107);
    close(tb, 14.107);
}

#[test]
fn d_s_engine_loading_received_kv_holds_its_decodes() {
    // Two conversations at once on 1 P + 1 D (each turn 100 → 3 tokens), transfers beside P's
    // engine, every step 10 ms: A reaches D at 29.107 ms and B at 43.214 (the previous test's
    // timeline). D loads each received request's KV in 4 ms, in the step that first schedules it.
    let with_load = |load_ms, decode_runs| {
        let mut cfg = config(pd(), 8192);
        cfg.kv_load_ms = load_ms;
        cfg.decode_runs = decode_runs;
        let r = run_cfg(cfg, one_turn(2));
        [r[0].ttft_ms, r[0].e2e_ms, r[1].ttft_ms, r[1].e2e_ms]
    };
    // Free load: A's last prompt token 29.107→39.107, decodes →49.107→59.107; B joins the step
    // 49.107→59.107 and decodes →69.107→79.107.
    let free = with_load(0.0, false);
    for (got, want) in free.into_iter().zip([39.107, 59.107, 59.107, 79.107]) {
        close(got, want);
    }
    // 4 ms: A's first step 29.107→43.107 (10 + 4); its decode 43.107→53.107; B arrives during it
    // and joins 53.107→67.107 (10 + B's 4), which also holds A's last decode: A's TPOT is
    // (67.107 − 43.107) / 2 = 12 ms. B decodes →77.107→87.107. The closed-form decode runs agree.
    for runs in [false, true] {
        let held = with_load(4.0, runs);
        for (got, want) in held.into_iter().zip([43.107, 67.107, 67.107, 87.107]) {
            close(got, want);
        }
    }
    // The same 4 ms set on the D instance alone (a pool's own load, `with_kv_load`) gives the
    // same timeline; set on P alone, which receives no KV, it changes nothing.
    let per_pool = |range: std::ops::Range<usize>| {
        let cost = ConstantCostModel { step_ms: 10.0 };
        let r = Simulation::new(config(pd(), 8192), &cost, one_turn(2))
            .with_kv_load(range, 4.0)
            .run()
            .records;
        [r[0].ttft_ms, r[0].e2e_ms, r[1].ttft_ms, r[1].e2e_ms]
    };
    for (got, want) in per_pool(1..2).into_iter().zip([43.107, 67.107, 67.107, 87.107]) {
        close(got, want);
    }
    for (got, want) in per_pool(0..1).into_iter().zip(free) {
        close(got, want);
    }
    // PPD's turn 2 stays on its pD (no KV received): it pays no load; turn 1 (through P) does.
    let mut cfg = config(ppd(), 8192);
    cfg.kv_load_ms = 4.0;
    let cost = ConstantCostModel { step_ms: 10.0 };
    let r = Simulation::new(cfg, &cost, conversation()).run().records;
    close(r[0].ttft_ms, 43.107);
    assert_eq!(r[1].route, RouteKind::Local);
    close(r[1].ttft_ms, 12.0);
}

#[test]
fn client_connection_pool_delays_sends_inside_ttft() {
    let mut cfg = config(replication(1), 8192);
    cfg.client_max_connections = Some(1);
    let r = run_cfg(cfg, one_turn(2));
    // A: enqueue 2, first token 12, done 32. B waits for A's connection until 32, enqueue 34,
    // first token 44: TTFT counts from B's send at 0.
    close(r[0].e2e_ms, 32.0);
    close(r[1].ttft_ms, 44.0);
    close(r[1].e2e_ms, 64.0);
}

#[test]
fn timeouts_fail_the_request_and_end_the_conversation() {
    let mut cfg = config(ppd(), 8192);
    // Turn 1 takes 59.107 ms end to end: a 50 ms timeout fails it; turn 2 is never sent.
    cfg.request_timeout_s = Some(0.050);
    let cost = ConstantCostModel { step_ms: 10.0 };
    let res = Simulation::new(cfg, &cost, conversation()).run();
    assert_eq!(res.records.len(), 1);
    assert_eq!(res.records[0].status, ppdsim::metrics::RequestStatus::Timeout);
    let s = ppdsim::metrics::Summary::from_records(
        "ppd",
        1,
        &res.records,
        &ppdsim::metrics::Slo {
            ttft_ms: 1e9,
            tpot_ms: 1e9,
        },
        vec![],
        0,
        &ppdsim::metrics::DEFAULT_PERCENTILES,
    );
    assert_eq!((s.num_requests, s.num_failed), (0, 1));
}

#[test]
fn least_loaded_pinning_spreads_conversations() {
    let mut cfg = config(replication(2), 8192);
    cfg.pinning = ppdsim::sim::Pinning::LeastLoaded;
    let r = run_cfg(cfg, one_turn(4));
    let on_r0 = r.iter().filter(|x| &*x.decode_instance == "R0").count();
    assert_eq!(on_r0, 2);
}

#[test]
fn mixed_pool_routes_turn2_by_the_pinned_instance_kind() {
    // 1 P + 1 D + 1 pD: conversations pinned to the pD go direct on turn 2, the others via P.
    let convs: Vec<TimedConversation> = (0..8)
        .map(|i| TimedConversation {
            id: format!("c{i}").into(),
            ..conversation().remove(0)
        })
        .collect();
    let r = run_cfg(config(on(r#"kind = "ppd""#, "1P_1D_1pD"), 8192), convs);
    for x in r.iter().filter(|x| x.turn == 2) {
        let expect = if &*x.decode_instance == "D1" {
            RouteKind::Local
        } else {
            RouteKind::Split
        };
        assert_eq!(x.route, expect, "{}", x.decode_instance);
    }
    assert!(
        r.iter().any(|x| x.turn == 2 && x.route == RouteKind::Local)
            && r.iter().any(|x| x.turn == 2 && x.route == RouteKind::Split)
    );
}

#[test]
fn answer_kv_reuse_is_a_knob() {
    let conv = || {
        vec![TimedConversation {
            id: "c".into(),
            start_at: SimTime::ZERO,
            turns: vec![
                Turn {
                    user_tokens: 100,
                    assistant_tokens: 40,
                },
                Turn {
                    user_tokens: 20,
                    assistant_tokens: 2,
                },
            ]
            .into(),
            later_turns: LaterTurn::after_each([SimDuration::from_secs_f64(1.0)]),
            shared_prefix: None,
        }]
    };
    // D holds 100 + 40 − 1 = 139 tokens → 128 in whole blocks of the 160-token turn-2 prompt.
    let r = run_cfg(config(ppd(), 8192), conv());
    assert_eq!((r[1].num_cached_tokens, r[1].num_computed_tokens), (128, 32));
    // Without answer reuse only the 100-token turn-1 prompt hits: 96 tokens.
    let mut cfg = config(ppd(), 8192);
    cfg.limits.cache_answers = false;
    let r = run_cfg(cfg, conv());
    assert_eq!((r[1].num_cached_tokens, r[1].num_computed_tokens), (96, 64));
}

#[test]
fn only_the_service_part_of_the_overhead_is_serialized() {
    let rep1 = replication(1);
    let mut cfg = config(rep1, 8192);
    cfg.request_overhead_ms = 20.0;
    // 1 ms of API-server work per request, 19 ms of latency: A enqueued at 20 ms, B at 21 ms.
    // A's prefill runs 20→30; B joins the next iteration, 30→40: TTFT 40 ms.
    cfg.request_service_ms = 1.0;
    let r = run_cfg(cfg.clone(), one_turn(2));
    close(r[0].ttft_ms, 30.0);
    close(r[1].ttft_ms, 40.0);
    // All 20 ms serialized: B is enqueued at 40 ms and prefills 40→50.
    cfg.request_service_ms = 20.0;
    let r = run_cfg(cfg, one_turn(2));
    close(r[1].ttft_ms, 50.0);
}

#[test]
fn service_cv_scales_each_service_by_its_own_lognormal_draw() {
    use ppdsim::sim::service_jitter;
    use ppdsim::sim::ServiceComponent::RequestHandling;
    let mut cfg = config(replication(1), 8192);
    cfg.request_overhead_ms = 20.0;
    cfg.request_service_ms = 20.0;
    // CV 0: exactly the configured 20 ms, then the 10 ms prefill.
    close(run_cfg(cfg.clone(), one_turn(1))[0].ttft_ms, 30.0);
    // CV 0.5: 20 ms × the draw of (seed, conversation 0, turn 1, request handling), to the µs.
    cfg.overhead_service_cv = 0.5;
    for seed in [0, 7] {
        cfg.routing_seed = seed;
        let f = service_jitter(0.5, seed, 0, 1, RequestHandling);
        let ttft = run_cfg(cfg.clone(), one_turn(1))[0].ttft_ms;
        assert!(
            (ttft - (20.0 * f + 10.0)).abs() <= 0.0005 + 1e-9,
            "seed {seed}: {ttft} vs 20 × {f} + 10"
        );
    }
    assert_ne!(
        service_jitter(0.5, 0, 0, 1, RequestHandling),
        service_jitter(0.5, 7, 0, 1, RequestHandling)
    );
}

#[test]
fn service_jitter_has_mean_one_and_the_asked_cv() {
    use ppdsim::sim::service_jitter;
    use ppdsim::sim::ServiceComponent::{DecodeHandoff, PrefillHandoff, RequestHandling};
    assert_eq!(service_jitter(0.0, 3, 5, 1, DecodeHandoff), 1.0);
    // The same key gives the same draw; another component or turn another.
    assert_eq!(
        service_jitter(0.5, 3, 5, 1, DecodeHandoff),
        service_jitter(0.5, 3, 5, 1, DecodeHandoff)
    );
    assert_ne!(
        service_jitter(0.5, 3, 5, 1, DecodeHandoff),
        service_jitter(0.5, 3, 5, 1, PrefillHandoff)
    );
    assert_ne!(
        service_jitter(0.5, 3, 5, 1, DecodeHandoff),
        service_jitter(0.5, 3, 5, 2, DecodeHandoff)
    );
    for cv in [0.25, 0.5, 1.0] {
        let n = 40_000;
        let xs: Vec<f64> = (0..n)
            .map(|c| {
                service_jitter(
                    cv,
                    11,
                    c,
                    c % 3,
                    [RequestHandling, PrefillHandoff, DecodeHandoff][c % 3],
                )
            })
            .collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let sd = (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
        // Standard errors at n = 40,000: mean cv/200; the sd's a few % for a lognormal of CV 1.
        assert!((mean - 1.0).abs() < 4.0 * cv / 200.0, "cv {cv}: mean {mean}");
        assert!((sd / mean / cv - 1.0).abs() < 0.06, "cv {cv}: sd/mean {}", sd / mean);
        assert!(xs.iter().all(|&x| x > 0.0));
    }
}

#[test]
fn shared_prefix_hits_without_reserving_its_blocks() {
    // Two one-turn conversations start with the same warmed 96-token prefix (6 blocks).
    let convs: Vec<TimedConversation> = one_turn(2)
        .into_iter()
        .map(|c| TimedConversation {
            shared_prefix: Some((0, 96)),
            ..c
        })
        .collect();
    let mut cfg = one_instance_without_queues();
    // 14 blocks: the prefix (6) + 1 private block each (103 tokens = 7 blocks, 6 shared) fit
    // together; reserving 7 blocks each would not (6 + 7 + 7 = 20).
    cfg.limits.capacity_blocks = 14;
    let r = run_cfg(cfg, convs);
    for x in &r {
        assert_eq!((x.num_cached_tokens, x.num_computed_tokens), (96, 4));
        close(x.ttft_ms, 12.0);
    }
}

/// `n` one-turn conversations sent at 0 (528 prompt tokens → 4 outputs), the first `shared` of
/// them starting with the same 512-token shared prefix.
fn shared_prefix_burst(n: usize, shared: usize) -> Vec<TimedConversation> {
    one_turn(n)
        .into_iter()
        .enumerate()
        .map(|(i, c)| TimedConversation {
            turns: vec![Turn {
                user_tokens: 528,
                assistant_tokens: 4,
            }]
            .into(),
            shared_prefix: (i < shared).then_some((0, 512)),
            ..c
        })
        .collect()
}

/// The burst's records on one instance without queues, priced 10 ms + 0.01 ms per decode
/// context token a step (nothing else), with or without cascade attention, on the step-by-step
/// path or with decode runs.
fn cascade_run(n: usize, shared: usize, cascade: bool, decode_runs: bool) -> Vec<RequestRecord> {
    let mut cfg = one_instance_without_queues();
    cfg.limits.cascade_attention = cascade;
    cfg.decode_runs = decode_runs;
    let cost = ppdsim::cost_model::LinearCostModel::new(ppdsim::cost_model::IterationCoefficients {
        beta0_ms: 10.0,
        beta1_ms_per_token: 0.0,
        beta2_ms_per_token2: 0.0,
        beta3_ms_per_seq: 0.0,
        beta4_ms_per_context_token: 0.01,
    });
    Simulation::new(cfg, &cost, shared_prefix_burst(n, shared))
        .run()
        .records
}

#[test]
fn cascade_attention_reads_a_prefix_every_sequence_shares_once() {
    // Eight requests sharing the 512-token prefix arrive at 2 ms and prefill together (16 new
    // tokens each, no decode: 10 ms) → first token at 12 ms. Each of the 3 decode steps holds 8
    // decodes of 528 + k context tokens (k = 0, 1, 2: the prompt, then each decoded token):
    // 10 + 0.01 × 8 × (528 + k) ms each without cascade; with it the prefix counts once,
    // 7 × 512 tokens = 35.84 ms less per step.
    let off = cascade_run(8, 8, false, true);
    let on = cascade_run(8, 8, true, true);
    let steps_off: f64 = (0..3).map(|k| 10.0 + 0.01 * 8.0 * (528.0 + k as f64)).sum();
    for (a, b) in off.iter().zip(&on) {
        close(a.ttft_ms, 12.0);
        close(b.ttft_ms, 12.0);
        close(a.e2e_ms, 12.0 + steps_off);
        close(b.e2e_ms, 12.0 + steps_off - 3.0 * 35.84);
        close(b.tpot_ms.unwrap(), a.tpot_ms.unwrap() - 35.84);
    }
    // The step-by-step path prices every step the same way.
    assert_eq!(cascade_run(8, 8, true, false), on);
    // One request without the prefix turns cascade off for the whole batch, and so do fewer
    // than 8 requests (vLLM's thresholds): the steps are priced as without cascade.
    assert_eq!(cascade_run(8, 7, true, true), cascade_run(8, 7, false, true));
    assert_eq!(cascade_run(7, 7, true, true), cascade_run(7, 7, false, true));
    let seven = cascade_run(7, 7, true, true);
    close(
        seven[0].e2e_ms,
        12.0 + (0..3).map(|k| 10.0 + 0.01 * 7.0 * (528.0 + k as f64)).sum::<f64>(),
    );
}

#[test]
fn kv_exhaustion_preempts_the_latest_sequence_and_recomputes_it() {
    let convs: Vec<TimedConversation> = one_turn(2)
        .into_iter()
        .map(|c| TimedConversation {
            turns: vec![Turn {
                user_tokens: 100,
                assistant_tokens: 40,
            }]
            .into(),
            ..c
        })
        .collect();
    let mut cfg = one_instance_without_queues();
    // 14 blocks of 16 tokens: both 100-token prompts fit (7 blocks each), but growing to 139
    // tokens (9 blocks each) does not: the later sequence is preempted and recomputed.
    cfg.limits.capacity_blocks = 14;
    let cost = ConstantCostModel { step_ms: 10.0 };
    let res = Simulation::new(cfg.clone(), &cost, convs.clone()).run();
    assert!(res.instances[0].num_preemptions >= 1, "{:?}", res.instances);
    assert_eq!(res.records.len(), 2);
    // A keeps running: prefill at 2→12, then 39 decode steps → done at 402 ms.
    close(res.records[0].e2e_ms, 402.0);
    // B was preempted when A needed its 8th block (both at 112 tokens of KV, 13 outputs each):
    // re-admitted when A completes (402 ms), it recomputes its prompt and 13 outputs (113 tokens)
    // in one iteration 402→412, sampling output 14, then decodes 26 more: done at 672 ms.
    close(res.records[1].e2e_ms, 672.0);
    // Reserving whole footprints instead: B (9 blocks) waits for A's 9 to be released; no preemption.
    cfg.limits.incremental_kv = false;
    let res = Simulation::new(cfg, &cost, convs).run();
    assert_eq!(res.instances[0].num_preemptions, 0);
    close(res.records[0].e2e_ms, 402.0);
    // B is admitted when A completes (402 ms): prefill 402→412 (A's prompt cached? no: separate
    // conversations), then 39 decode steps → 802 ms.
    close(res.records[1].ttft_ms, 412.0);
    close(res.records[1].e2e_ms, 802.0);
}

#[test]
fn requests_longer_than_max_model_len_are_refused() {
    let mut cfg = config(ppd(), 8192);
    // Turn 1: 100 + 3 tokens fit in 120; turn 2: 123 + 2 do not.
    cfg.max_model_len = Some(120);
    let r = run_cfg(cfg, conversation());
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].status, ppdsim::metrics::RequestStatus::Ok);
    assert_eq!(r[1].status, ppdsim::metrics::RequestStatus::Rejected);
    assert_eq!((r[1].ttft_ms, r[1].num_computed_tokens), (0.0, 0));
}

/// One replica behind a client pool of 1 connection; A: two turns with no think time, B: one
/// turn, both sent at 0 (A first).
fn pool_of_one() -> (SimConfig, TimedConversation, TimedConversation) {
    let mut a = conversation().remove(0);
    a.later_turns = LaterTurn::after_each([SimDuration::ZERO]);
    let mut cfg = config(replication(1), 8192);
    cfg.client_max_connections = Some(1);
    (cfg, a, one_turn(1).remove(0))
}

#[test]
fn a_turn_sent_at_once_reuses_its_connection() {
    let (cfg, a, b) = pool_of_one();
    let r = run_cfg(cfg, vec![a, b]);
    // A turn 1: enqueue 2, done 32. Its turn 2 takes the connection at once: enqueue 34, first
    // token 44, done 54. Only then does B get it: enqueue 56, first token 66.
    close(r[1].arrived_at_ms, 32.0);
    close(r[1].completed_at_ms, 54.0);
    close(r[2].ttft_ms, 66.0);
}

#[test]
fn a_requeued_turn_waits_behind_the_pool_s_waiters() {
    // The same pool of 1, with every turn sent at once requeued: when A's turn 1 ends (32 ms) B,
    // waiting since 0, takes the connection: enqueue 34, first token 44, done 64 (two decode
    // steps). A's turn 2, sent at 32, gets it only then: enqueue 66, first token 76 (TTFT 44 ms,
    // the wait included), done 86.
    let (mut cfg, a, b) = pool_of_one();
    cfg.client_requeue_rate = 1.0;
    let r = run_cfg(cfg.clone(), vec![a.clone(), b]);
    close(r[2].ttft_ms, 44.0);
    close(r[2].completed_at_ms, 64.0);
    close(r[1].arrived_at_ms, 32.0);
    close(r[1].ttft_ms, 44.0);
    close(r[1].completed_at_ms, 86.0);
    // Nobody waiting: the turn keeps its connection whatever the rate (enqueue 34, done 54).
    let alone = run_cfg(cfg, vec![a]);
    close(alone[1].ttft_ms, 12.0);
    close(alone[1].completed_at_ms, 54.0);
}

#[test]
fn client_requeue_rate_is_the_fraction_of_requeued_turns() {
    // 2,000 two-turn conversations, no think time, arriving faster than one instance serves them
    // through a pool of 4, so a connection always has waiters: at rate 0.25 the share of turn-2
    // requests that waited for a connection (TTFT beyond their service) is 0.25 within sampling
    // error (σ = √(p(1−p)/n) ≈ 0.0097 → ±4σ ≈ 0.04); at rate 0 none waits.
    let mut convs = staggered(2000, 0.001);
    for c in &mut convs {
        c.later_turns = LaterTurn::after_each([SimDuration::ZERO]);
    }
    let mut cfg = config(replication(1), 8192);
    cfg.client_max_connections = Some(4);
    let waited = |cfg: SimConfig| {
        let r = run_cfg(cfg, convs.clone());
        // A turn 2 that keeps its connection has its first token within two iterations (20–22
        // ms here); a requeued one waits behind the pool's waiting first turns (0.59 s and more
        // here: the conversations arrive at 1,000/s, far faster than the pool of 4 serves them).
        let turn2: Vec<&RequestRecord> = r.iter().filter(|x| x.turn == 2).collect();
        assert_eq!(turn2.len(), 2000);
        turn2.iter().filter(|x| x.ttft_ms > 60.0).count() as f64 / 2000.0
    };
    assert_eq!(waited(cfg.clone()), 0.0);
    cfg.client_requeue_rate = 0.25;
    let share = waited(cfg);
    assert!((share - 0.25).abs() < 0.04, "requeued share {share}");
}

#[test]
fn streamed_tokens_reach_the_client_when_the_api_server_has_sent_their_step() {
    // One instance, constant 10 ms steps, request handling 2 ms serialized; A and B (100 tokens
    // in, 3 out) sent at 0. Engine: A's prefill 2→12, B's 12→22 with A's decode, then 22→32
    // (A done) and 32→42 (B done). The API server sends each step's chunks one after another
    // once the step has ended and it is free.
    let mut cfg = config(replication(1), 8192);
    let engine = run_cfg(cfg.clone(), one_turn(2));
    close(engine[0].ttft_ms, 12.0);
    close(engine[1].completed_at_ms, 42.0);
    // 3 ms a chunk: steps ending 12 (1 chunk), 22 (2), 32 (2), 42 (1) are sent by 15, 28, 38, 45.
    cfg.stream_ms_per_chunk = 3.0;
    let r = run_cfg(cfg.clone(), one_turn(2));
    close(r[0].ttft_ms, 15.0);
    close(r[1].ttft_ms, 28.0);
    close(r[0].completed_at_ms, 38.0);
    close(r[1].completed_at_ms, 45.0);
    // 8 ms a chunk, slower than the engine: a backlog — 20, max(20, 22) + 16 = 38,
    // max(38, 32) + 16 = 54, max(54, 42) + 8 = 62.
    cfg.stream_ms_per_chunk = 8.0;
    let r = run_cfg(cfg, one_turn(2));
    close(r[0].ttft_ms, 20.0);
    close(r[1].ttft_ms, 38.0);
    close(r[0].completed_at_ms, 54.0);
    close(r[1].completed_at_ms, 62.0);
}

#[test]
fn an_engine_s_admission_work_lengthens_the_step_that_first_schedules_each_request() {
    // One instance, constant 10 ms steps, request handling 2 ms serialized; A and B (100 tokens
    // in, 3 out) sent at 0 reach the engine at 2 and 4 ms. Admitting a request costs the engine
    // 4 ms in the step that first schedules it: A's prefill 2→16 (10 + 4), B's 16→30 with A's
    // decode (10 + 4: A's second token waits for B's admission too), then 30→40 (A done) and
    // 40→50 (B done). Without the cost: 12, 22, 32, 42.
    let mut cfg = config(replication(1), 8192);
    cfg.engine_admit_ms = 4.0;
    for decode_runs in [false, true] {
        cfg.decode_runs = decode_runs;
        let r = run_cfg(cfg.clone(), one_turn(2));
        close(r[0].ttft_ms, 16.0);
        close(r[1].ttft_ms, 30.0);
        close(r[0].completed_at_ms, 40.0);
        close(r[1].completed_at_ms, 50.0);
        // A's two later tokens at 30 and 40: TPOT (40 − 16) / 2.
        close(r[0].tpot_ms.unwrap(), 12.0);
    }
    // A split turn is admitted twice (by P, then by D), a direct one once: alone on 1 P + 1 pD,
    // PD's turns and PPD's turn 1 take 2 × 4 ms longer to their first token, PPD's turn 2 4 ms.
    let with = |deploy: Deploy, admit_ms: f64| {
        let mut cfg = config(deploy, 8192);
        cfg.engine_admit_ms = admit_ms;
        run_cfg(cfg, conversation())
    };
    for (deploy, extra_ms) in [(pd(), [8.0, 8.0]), (ppd(), [8.0, 4.0])] {
        let (free, paid) = (with(deploy.clone(), 0.0), with(deploy, 4.0));
        for t in 0..2 {
            close(paid[t].ttft_ms - free[t].ttft_ms, extra_ms[t]);
        }
    }
}

#[test]
fn a_stream_slower_than_its_decode_steps_sets_the_client_s_tpot_on_both_paths() {
    // One request, 50 output tokens, 10 ms steps, 15 ms a chunk: the first token leaves at
    // 12 + 15 = 27 ms and each later one 15 ms after the previous (the server is the bottleneck),
    // so the client sees TPOT 15 ms and E2E 27 + 49 × 15 = 762 ms — whether the decode steps run
    // one by one or as one closed-form run.
    let mut c = one_turn(1);
    c[0].turns = [Turn {
        assistant_tokens: 50,
        ..c[0].turns[0]
    }]
    .into();
    let mut cfg = config(replication(1), 8192);
    cfg.stream_ms_per_chunk = 15.0;
    for decode_runs in [false, true] {
        cfg.decode_runs = decode_runs;
        let r = run_cfg(cfg.clone(), c.clone());
        close(r[0].ttft_ms, 27.0);
        close(r[0].e2e_ms, 762.0);
        close(r[0].tpot_ms.unwrap(), 15.0);
    }
}

#[test]
fn affinity_miss_routes_a_ppd_turn_two_like_a_first_turn() {
    // With every turn 2 unrecognised, PPD's turn 2 takes PD's path (through P, with the KV
    // transfer), and on a 1P+1D cluster it is PD's turn 2 to the microsecond.
    let mut cfg = config(ppd(), 8192);
    cfg.affinity_miss_rate = 1.0;
    let missed = run_cfg(cfg, conversation());
    let pd = run(pd(), 8192);
    let t2 = &missed[1];
    assert_eq!(t2.route, RouteKind::Split);
    assert_eq!(t2.kv_transfer_bytes, (103 + 20) * KV);
    close(t2.ttft_ms, pd[1].ttft_ms);
    close(t2.ttft_ms, 42.122);
    close(t2.e2e_ms, pd[1].e2e_ms);
    // Turn 1 is never a miss.
    close(missed[0].ttft_ms, 39.107);
}

#[test]
fn affinity_miss_rate_is_the_fraction_of_rerouted_turns() {
    // 3,000 two-turn conversations on PPD 1P+3pD: the share of turn-2 requests on the split route
    // is the miss rate (2/9, vllm-ppd's comprehensive benchmark) within sampling error
    // (σ = √(p(1−p)/n) = 0.0076 → ±4σ = 0.03).
    let mut cfg = config(on(r#"kind = "ppd""#, "1P_3pD"), 8192);
    cfg.affinity_miss_rate = ppdsim::sim::COMPREHENSIVE_AFFINITY_MISS_RATE;
    let convs = staggered(3000, 0.05);
    let r = run_cfg(cfg, convs);
    let turn2: Vec<&RequestRecord> = r.iter().filter(|x| x.turn == 2).collect();
    assert_eq!(turn2.len(), 3000);
    let split = turn2.iter().filter(|x| x.route == RouteKind::Split).count() as f64 / 3000.0;
    assert!((split - 2.0 / 9.0).abs() < 0.03, "split share {split}");
    // A re-pinned conversation may land on another pD: then its turn 2 finds nothing cached there.
    let moved = r
        .chunks(2)
        .filter(|c| c[0].decode_instance != c[1].decode_instance)
        .count() as f64
        / 3000.0;
    assert!(moved > 0.1 && moved < split, "moved share {moved}");
}

#[test]
fn routing_seed_draws_another_placement_with_the_same_shares() {
    // 600 one-turn conversations on 1 P + 3 D: seed 0 is the default placement; seed 1 moves
    // conversations (a plain XOR of small seeds would only permute them in blocks of 8 and keep
    // every instance's count), yet each instance still gets 1/3 ± 4σ (σ = √(2/9/600) = 0.019).
    let convs = || -> Vec<TimedConversation> {
        (0..600)
            .map(|i| {
                let mut c = conversation().remove(0);
                c.id = format!("c{i}").into();
                c.turns = c.turns[..1].into();
                c.start_at = SimTime::ZERO + SimDuration::from_secs_f64(i as f64 * 0.1);
                c
            })
            .collect()
    };
    let pd3 = || on(r#"kind = "pd""#, "1P_3pD");
    let place = |seed: u64| -> Vec<String> {
        let mut cfg = config(pd3(), 8192);
        cfg.routing_seed = seed;
        run_cfg(cfg, convs())
            .into_iter()
            .map(|r| r.decode_instance.to_string())
            .collect()
    };
    let (default, zero, other) = (run_cfg(config(pd3(), 8192), convs()), place(0), place(1));
    assert!(default
        .iter()
        .map(|r| &*r.decode_instance)
        .eq(zero.iter().map(String::as_str)));
    let moved = zero.iter().zip(&other).filter(|(a, b)| a != b).count();
    assert!(moved > 300, "only {moved} of 600 conversations moved");
    for d in ["D0", "D1", "D2"] {
        let count = |v: &[String]| v.iter().filter(|x| *x == d).count();
        let share = count(&other) as f64 / 600.0;
        assert!((share - 1.0 / 3.0).abs() < 0.077, "{d}: share {share}");
    }
    // The counts differ too: not a permutation of the default placement.
    assert_ne!(
        ["D0", "D1", "D2"].map(|d| zero.iter().filter(|x| *x == d).count()),
        ["D0", "D1", "D2"].map(|d| other.iter().filter(|x| *x == d).count())
    );
}

#[test]
fn prompt_overhead_is_paid_once_per_request() {
    // 0.01 ms per prompt token, paid once at the request's entry: a direct turn and a split turn
    // alike (D's hop after the KV transfer adds none).
    let per_token = 0.01;
    let with = |policy: Deploy| {
        let mut cfg = config(policy, 8192);
        cfg.prompt_ms_per_token = per_token;
        run_cfg(cfg, conversation())
    };
    let pd_base = run(pd(), 8192);
    let pd_extra = with(pd());
    // Turn 1: 100 prompt tokens = +1 ms; turn 2: 100 + 3 + 20 = 123 tokens = +1.23 ms.
    close(pd_extra[0].ttft_ms, pd_base[0].ttft_ms + 1.0);
    close(pd_extra[1].ttft_ms, pd_base[1].ttft_ms + 1.23);
    let ppd_extra = with(ppd());
    // PPD's turn 2 is direct: +1.23 ms on the 12 ms of `ppd_two_turns_by_hand`.
    close(ppd_extra[1].ttft_ms, 12.0 + 1.23);
}

#[test]
fn timeline_samples_queue_kv_and_busy_fraction_on_a_grid() {
    let cost = ConstantCostModel { step_ms: 10.0 };
    let res = Simulation::new(one_instance_without_queues(), &cost, conversation())
        .with_timeline(0.005)
        .run();
    let tl = &res.timeline;
    assert!(tl.iter().all(|s| &*s.instance == "R0"));
    // Turn 1 reaches the engine after the 2 ms request overhead; its prefill runs 2 → 12 ms.
    let at = |t: f64| tl.iter().find(|s| (s.time_s - t).abs() < 1e-12).unwrap();
    close(at(0.005).busy_fraction, 0.6);
    assert_eq!((at(0.005).waiting, at(0.005).running), (0, 1));
    close(at(0.010).busy_fraction, 1.0);
    // During the 1 s think time nothing runs; the prefix cache holds turn 1's KV (7 blocks of 16).
    let idle = at(0.500);
    assert_eq!((idle.waiting, idle.running), (0, 0));
    close(idle.busy_fraction, 0.0);
    assert!(
        idle.kv_usage > 0.0 && idle.kv_usage <= 8.0 / 100_000.0,
        "{}",
        idle.kv_usage
    );
    // The grid covers the run: Σ busy fraction × 5 ms is the busy time up to the last point.
    let busy_ms: f64 = tl.iter().map(|s| s.busy_fraction * 5.0).sum();
    let makespan_ms = res.records.iter().map(|r| r.completed_at_ms).fold(0.0, f64::max);
    let total_busy_ms = res.instances[0].busy_fraction * makespan_ms;
    assert!(tl.last().unwrap().time_s * 1e3 > makespan_ms - 5.0);
    assert!(
        busy_ms <= total_busy_ms + 1e-9 && busy_ms > total_busy_ms - 10.0,
        "{busy_ms} vs {total_busy_ms}"
    );
    // A 1 µs grid over ≈ 1 s would be a million points: it is thinned to at most 4,096, on an
    // interval that doubled, and still accounts for the busy time.
    let fine = Simulation::new(one_instance_without_queues(), &cost, conversation())
        .with_timeline(1e-6)
        .run()
        .timeline;
    assert!(fine.len() <= ppdsim::sim::MAX_TIMELINE_POINTS, "{}", fine.len());
    let step = fine[1].time_s - fine[0].time_s;
    assert!(step >= 1e-6 * 128.0, "{step}");
    let busy_fine: f64 = fine.iter().map(|s| s.busy_fraction * step * 1e3).sum();
    assert!(
        (busy_fine - total_busy_ms).abs() < step * 1e3 + 1e-6,
        "{busy_fine} vs {total_busy_ms}"
    );
}

#[test]
fn answers_are_reused_up_to_the_expected_first_retokenisation_mismatch() {
    // Turn 1: 160 user tokens → 1,025 answer tokens (the KV holds 1,024 of them); turn 2: 20 more.
    let conv = || {
        vec![TimedConversation {
            id: "c".into(),
            start_at: SimTime::ZERO,
            turns: vec![
                Turn {
                    user_tokens: 160,
                    assistant_tokens: 1025,
                },
                Turn {
                    user_tokens: 20,
                    assistant_tokens: 2,
                },
            ]
            .into(),
            later_turns: LaterTurn::after_each([SimDuration::from_secs_f64(1.0)]),
            shared_prefix: None,
        }]
    };
    let cached_turn2 = |p: f64| {
        let mut cfg = config(replication(1), 8192);
        cfg.limits.answer_mismatch_per_token = p;
        let r = run_cfg(cfg, conv());
        assert_eq!(r[1].num_prompt_tokens, 160 + 1025 + 20);
        (r[1].num_cached_tokens, r[1].num_computed_tokens)
    };
    // p = 0: the whole answer is reused: 160 + 1,024 = 1,184 = 74 blocks of 16.
    assert_eq!(cached_turn2(0.0), (1184, 1205 - 1184));
    // p = 0.0011 (vllm-ppd's cache-info fit): (1 − 0.9989¹⁰²⁴) / 0.0011 = 614.5 → 614 answer
    // tokens; 160 + 614 = 774 → 48 blocks = 768 cached, the other 437 prompt tokens recomputed.
    assert_eq!(cached_turn2(0.0011), (768, 1205 - 768));
}

#[test]
fn prefill_pool_on_another_gpu_runs_at_its_own_speed() {
    // P on a GPU three times slower (30 ms steps), D as before (10 ms).
    let (fast, slow) = (ConstantCostModel { step_ms: 10.0 }, ConstantCostModel { step_ms: 30.0 });
    // Instances: P0 = 0, D0 = 1; `slow_pool` runs on the slow GPU.
    let run = |slow_pool: std::ops::Range<usize>| {
        let cfg = config(pd(), 8192);
        let limits = cfg.limits;
        Simulation::new(cfg, &fast, conversation())
            .with_pool(slow_pool, &slow, limits)
            .run()
            .records
    };
    let r = run(0..1);
    // Turn 1 as in pd_two_turns_by_hand, but P's step takes 2→32 ms: transfer → 46.107, handoff →
    // 49.107, D's step → 59.107 (first token), two 10 ms decode steps → 79.107.
    close(r[0].ttft_ms, 59.107);
    close(r[0].tpot_ms.unwrap(), 10.0);
    close(r[0].e2e_ms, 79.107);
    // The decode side on the slow GPU instead: P 2→12, transfer → 26.107, handoff → 29.107, D's
    // step → 59.107 (first token), decode steps of 30 ms → 119.107.
    let r = run(1..2);
    close(r[0].ttft_ms, 59.107);
    close(r[0].tpot_ms.unwrap(), 30.0);
    close(r[0].e2e_ms, 119.107);
}

#[test]
fn decode_runs_cut_events_and_keep_every_time() {
    // One replica, 10 ms per iteration, request overhead 2 ms (serialized). A: 100 → 50 tokens
    // at 0; its prefill 2→12 samples token 1, then 49 decode steps end at 502 ms: one decode run
    // to its completion, 1 event for 49 iterations. Then B (100 → 3 tokens) mid-run, and B
    // exactly at a step end.
    let turn = |out| Turn {
        user_tokens: 100,
        assistant_tokens: out,
    };
    let conv = |id: &str, at_s: f64, out| TimedConversation {
        id: id.into(),
        start_at: SimTime::ZERO + SimDuration::from_secs_f64(at_s),
        turns: vec![turn(out)].into(),
        later_turns: Box::new([]),
        shared_prefix: None,
    };
    let cost = ConstantCostModel { step_ms: 10.0 };
    let sim = |convs: Vec<TimedConversation>, runs: bool| {
        let mut cfg = config(replication(1), 8192);
        cfg.decode_runs = runs;
        Simulation::new(cfg, &cost, convs).with_timeline(0.05).run()
    };
    let alone = || vec![conv("a", 0.0, 50)];
    let (fast, steps) = (sim(alone(), true), sim(alone(), false));
    assert_eq!(fast.records, steps.records);
    assert_eq!(fast.timeline, steps.timeline);
    close(fast.records[0].ttft_ms, 12.0);
    close(fast.records[0].e2e_ms, 502.0);
    close(fast.records[0].tpot_ms.unwrap(), 10.0);
    // Start, enqueue and 50 iteration ends step by step; start, enqueue, prefill end and the run's
    // end with decode runs.
    assert_eq!((steps.num_events, fast.num_events), (52, 4));
    assert_eq!(fast.instances, steps.instances);
    assert_eq!(fast.instances[0].num_iterations, 50);
    // B lands inside A's run (its enqueue at 202.5 ms, mid-step 202→212): A's run is cut after
    // that step and B's prefill joins the iteration 212→222 with A's decode.
    let both = || vec![conv("a", 0.0, 50), conv("b", 0.2005, 3)];
    let (fast, steps) = (sim(both(), true), sim(both(), false));
    assert_eq!(fast.records, steps.records);
    assert_eq!(fast.timeline, steps.timeline);
    assert_eq!(fast.instances, steps.instances);
    close(fast.records[1].ttft_ms, 222.0 - 200.5);
    // A's decode steps are one token each throughout: its TPOT stays 10 ms.
    close(fast.records[0].tpot_ms.unwrap(), 10.0);
    assert!(
        fast.num_events < steps.num_events / 4,
        "{} vs {}",
        fast.num_events,
        steps.num_events
    );
    // B enqueued exactly at a step end of A's run (202 ms): both paths order it the same way.
    let tie = || vec![conv("a", 0.0, 50), conv("b", 0.2, 3)];
    let (fast, steps) = (sim(tie(), true), sim(tie(), false));
    assert_eq!(fast.records, steps.records);
    assert_eq!(fast.timeline, steps.timeline);
}

#[test]
fn long_decode_runs_jump_to_an_event_in_closed_form() {
    // One 100 → 8,000-token request on a linear model whose step time grows with the context
    // (5.05 ms + 0.1 µs per context token: 5.06 → 5.85 ms, fractional µs rounded per step). Its
    // first run is planned at MAX_DECODE_RUN_STEPS = 4,096 steps, ≈ 0.01 → 21.6 s
    // (Σ 5.05 + 1e-4·(100 + k) ms for k ≤ 4,096). B arrives at 20 s, ≈ 3,800 steps into it, so
    // the run is advanced past more steps than it walks one by one (the closed-form search);
    // every time must still be the step path's.
    use ppdsim::cost_model::{IterationCoefficients, LinearCostModel};
    let cost = LinearCostModel::new(IterationCoefficients::from_array([5.0, 0.0, 0.0, 0.05, 1e-4]));
    let conv = |id: &str, at_s: f64, out| TimedConversation {
        id: id.into(),
        start_at: SimTime::ZERO + SimDuration::from_secs_f64(at_s),
        turns: vec![Turn {
            user_tokens: 100,
            assistant_tokens: out,
        }]
        .into(),
        later_turns: Box::new([]),
        shared_prefix: None,
    };
    let sim = |runs: bool| {
        let mut cfg = config(replication(1), 8192);
        cfg.decode_runs = runs;
        Simulation::new(cfg, &cost, vec![conv("a", 0.0, 8000), conv("b", 20.0, 5)]).run()
    };
    let (fast, steps) = (sim(true), sim(false));
    assert_eq!(fast.records, steps.records);
    assert_eq!(fast.instances, steps.instances);
    assert!(
        fast.num_events * 100 < steps.num_events,
        "{} vs {}",
        fast.num_events,
        steps.num_events
    );
    // A alone would decode 7,999 steps of 5.05 + 1e-4·c ms, c = 101 … 8,099: the mean step is
    // 5.05 + 1e-4 × 4,100 = 5.46 ms; B's prefill and decodes lengthen five of them slightly.
    let tpot = fast.records[0].tpot_ms.expect("decodes");
    assert!((tpot - 5.46).abs() < 0.01, "{tpot}");
}

#[test]
fn records_stream_in_order_and_memory_holds_the_requests_in_flight() {
    // 3,000 two-turn conversations, one every 50 ms, each over in ≈ 1.05 s (two 3- and 2-token
    // turns 1 s apart): about 21 are in flight at once, so the run needs a few dozen request
    // slots, not 6,000. A sink receives exactly the records `run` returns, in (conversation, turn)
    // order.
    let convs = staggered(3000, 0.05);
    let cost = ConstantCostModel { step_ms: 10.0 };
    let cfg = config(replication(2), 8192);
    let held = Simulation::new(cfg.clone(), &cost, &convs[..]).run();
    assert_eq!(held.records.len(), 6000);
    assert!(held
        .records
        .windows(2)
        .all(|w| (w[0].conversation, w[0].turn) < (w[1].conversation, w[1].turn)));
    assert!(held.request_slots <= 48, "{} slots", held.request_slots);
    let mut streamed = Vec::new();
    let r = Simulation::new(cfg, &cost, &convs[..])
        .with_record_sink(|rec| streamed.push(rec))
        .run();
    assert!(r.records.is_empty());
    assert_eq!(streamed, held.records);
}
