//! Invariants on random small traces, for every policy (proptest).

use ppdsim::cost_model::{IterationCoefficients, LinearCostModel};
use ppdsim::metrics::RouteKind;
use ppdsim::sim::workload::{LaterTurn, TimedConversation};
use ppdsim::sim::Simulation;
use ppdsim::time::{SimDuration, SimTime};
use ppdsim::trace::Turn;
use proptest::prelude::*;

/// Every router, on clusters with every role: D and pD pools side by side, replicas beside a
/// PD group, replicas alone.
fn policies() -> Vec<super::lifecycle::Deploy> {
    use super::lifecycle::on;
    vec![
        on(r#"kind = "pd""#, "1P_2pD"),
        on(r#"kind = "ppd""#, "2P_1pD"),
        on(r#"kind = "ppd""#, "1R_1P_1D_1pD"),
        on(r#"kind = "replication""#, "2R"),
        on(r#"kind = "replication""#, "1P_1D_1pD"),
        on(
            "kind = \"adaptive\"\nmax_local_append_tokens = 64\nmin_cache_rate = 0.2",
            "1P_2pD",
        ),
        on(
            "kind = \"adaptive\"\nname = \"adaptive-hysteresis\"\nmax_local_append_tokens = 256\nhysteresis = { high_backlog_tokens = 200, low_backlog_tokens = 50 }",
            "1P_2pD",
        ),
        on(r#"kind = "predictive""#, "1R_1P_2pD"),
    ]
}

fn conv_strategy() -> impl Strategy<Value = TimedConversation> {
    (
        0u64..2_000_000,
        prop::collection::vec((0u32..300, 1u32..60, 0u64..500_000), 1..5),
    )
        .prop_map(|(start, turns)| TimedConversation {
            id: "p".into(),
            start_at: SimTime(start),
            later_turns: LaterTurn::after_each(turns.iter().skip(1).map(|t| SimDuration(t.2))),
            // A third of the conversations start with a 32-token prefix shared by all of them.
            shared_prefix: (start % 3 == 0).then_some((0, 32)),
            turns: turns
                .iter()
                .enumerate()
                .map(|(k, t)| Turn {
                    user_tokens: if k == 0 { t.0.max(40) } else { t.0 },
                    assistant_tokens: t.1,
                })
                .collect(),
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn every_request_completes_once_and_tokens_are_conserved(convs in prop::collection::vec(conv_strategy(), 1..12), budget in 16u32..512, cap in 150u64..400) {
        let cost = LinearCostModel::new(IterationCoefficients::from_array([5.0, 0.02, 1e-5, 0.01, 7e-5]));
        let total_turns: usize = convs.iter().map(|c| c.turns.len()).sum();
        for (k, p) in policies().into_iter().enumerate() {
            let (kind, shape) = (p.0.kind(), p.1);
            let mut cfg = super::lifecycle::config(p, budget);
            // Alternate the client pool and the pinning rule across policies.
            cfg.client_max_connections = if k % 2 == 0 { Some(3) } else { None };
            // Alternate incremental KV allocation (with preemption) and whole-footprint reservation.
            cfg.limits.incremental_kv = k % 3 != 2;
            // Some policies refuse long requests: those conversations end early.
            cfg.max_model_len = (k == 1).then_some(600);
            cfg.pinning = if k % 2 == 1 { ppdsim::sim::Pinning::LeastLoaded } else { ppdsim::sim::Pinning::Hash };
            cfg.template_tokens_per_message = 3;
            // Small KV memory (blocks of 16) to force prefix-cache evictions; every request still fits.
            cfg.limits.capacity_blocks = cap;
            cfg.limits.max_num_seqs = 4;
            // Some policies time slow requests out: their conversations end early.
            cfg.request_timeout_s = (k % 4 == 3).then_some(0.3);
            // Some policies stream their tokens through a slow API server (4 ms per chunk, about a
            // decode step): tokens reach the client late, and the step path and the closed-form
            // decode runs must agree on when.
            cfg.stream_ms_per_chunk = if k % 2 == 1 { 4.0 } else { 0.0 };
            // Most policies' P engines do the handoffs (longer P steps; the predictive router
            // counts the queued ones in its remote cost), the others queue them.
            cfg.pd_handoff_queue = if k % 4 != 1 {
                ppdsim::sim::HandoffQueue::PrefillEngine
            } else {
                ppdsim::sim::HandoffQueue::PerPrefill
            };
            // Some policies' P engines also wait for their KV sends (longer P steps again).
            cfg.prefill_waits_for_send = k % 3 != 2;
            // Some policies' D engines load each received request's KV for 3 ms (longer steps
            // where a split request joins a batch of decodes).
            cfg.kv_load_ms = if k % 2 == 0 { 3.0 } else { 0.0 };
            // Some policies' engines spend 2 ms admitting each request (longer steps wherever a
            // request is first scheduled; a preempted one re-admitted pays nothing).
            cfg.engine_admit_ms = if k % 3 == 1 { 2.0 } else { 0.0 };
            let cfg_max_len = cfg.max_model_len;
            let timeout = cfg.request_timeout_s;
            // Decode runs and the step-by-step path: the same records, usage and timeline.
            let runs = ppdsim::sim::SimConfig { decode_runs: true, ..cfg.clone() };
            let fast = Simulation::new(runs.clone(), &cost, convs.clone()).with_timeline(0.05).run();
            let r = Simulation::new(cfg, &cost, convs.clone()).with_timeline(0.05).run();
            prop_assert_eq!(&fast.records, &r.records, "{}", kind);
            prop_assert_eq!(&fast.instances, &r.instances);
            prop_assert_eq!(&fast.timeline, &r.timeline);
            prop_assert_eq!(fast.mode_switches, r.mode_switches);
            prop_assert!(fast.num_events <= r.num_events);
            // Fed one at a time in start order (`ppdsim run`'s trace feed), the conversations give
            // what they give all at once, event for event.
            let mut sorted = convs.clone();
            sorted.sort_by_key(|c| c.start_at);
            let whole = Simulation::new(runs.clone(), &cost, sorted.clone()).with_timeline(0.05).run();
            let mut feed = sorted.into_iter();
            let fed = Simulation::fed(runs, &cost, 0, move || feed.next()).with_timeline(0.05).run();
            prop_assert_eq!(&fed.records, &whole.records, "{}", kind);
            prop_assert_eq!(&fed.instances, &whole.instances);
            prop_assert_eq!(&fed.timeline, &whole.timeline);
            prop_assert_eq!(fed.mode_switches, whole.mode_switches);
            prop_assert_eq!(fed.num_events, whole.num_events);
            prop_assert_eq!(fed.request_slots, whole.request_slots);
            if cfg_max_len.is_none() && timeout.is_none() {
                prop_assert_eq!(r.records.len(), total_turns);
            } else {
                prop_assert!(r.records.len() <= total_turns);
            }
            for rec in r.records.iter().filter(|x| x.status == ppdsim::metrics::RequestStatus::Ok) {
                prop_assert!(rec.arrived_at_ms <= rec.first_token_at_ms && rec.first_token_at_ms <= rec.completed_at_ms);
                prop_assert!(rec.ttft_ms <= rec.e2e_ms);
                let conv = &convs[rec.conversation];
                let turn = conv.turns[rec.turn - 1];
                prop_assert_eq!(rec.num_output_tokens, turn.assistant_tokens);
                prop_assert_eq!(rec.num_prompt_tokens, rec.num_context_tokens + rec.num_user_tokens);
                prop_assert_eq!(rec.num_user_tokens, turn.user_tokens + 3);
                prop_assert!(rec.num_cached_tokens < rec.num_prompt_tokens);
                // Prompt tokens are either found in the computing instance's cache or computed there.
                prop_assert_eq!(rec.num_cached_tokens + rec.num_computed_tokens, rec.num_prompt_tokens);
                prop_assert!(rec.num_computed_tokens >= 1);
                if rec.route == RouteKind::Split {
                    prop_assert_eq!(rec.kv_transfer_bytes, rec.num_prompt_tokens as u64 * 131_072);
                } else {
                    prop_assert_eq!(rec.kv_transfer_bytes, 0);
                }
                if let Some(t) = rec.tpot_ms {
                    prop_assert!(t > 0.0 && rec.num_output_tokens > 1);
                }
                // The pinned instance's role fixes the route on R (whole) and D (via P); on a pD
                // the pd router always splits and the replication router never does.
                let d: usize = rec.decode_instance[1..].parse().unwrap();
                let role = if rec.decode_instance.starts_with('R') {
                    ppdsim::cluster::PoolRole::Replica
                } else {
                    shape.role_of(shape.prefill as usize + shape.replica as usize + d)
                };
                let expect = match (role, kind) {
                    (ppdsim::cluster::PoolRole::Replica, _) | (_, "replication") if role != ppdsim::cluster::PoolRole::Decode => Some(RouteKind::Local),
                    (ppdsim::cluster::PoolRole::Decode, _) | (_, "pd") => Some(RouteKind::Split),
                    _ => None,
                };
                if let Some(e) = expect {
                    prop_assert_eq!(rec.route, e, "{} on {}", kind, rec.decode_instance);
                }
            }
        }
    }
}
