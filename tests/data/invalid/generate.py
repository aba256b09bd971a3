#!/usr/bin/env python3
"""Writes the bad-input corpus of tests/it/corpus.rs: one file per case, grouped by the command
that reads it. Each case is a small edit of a valid input (or a hand-made broken file), named
after what is wrong. Re-run after changing a case: `python3 tests/data/invalid/generate.py`."""
import gzip, json, os, shutil

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = "../../../../"  # from tests/data/invalid/<kind>/ to the repository root

def write(kind, name, text, binary=False):
    d = os.path.join(HERE, kind)
    os.makedirs(d, exist_ok=True)
    mode = "wb" if binary else "w"
    with open(os.path.join(d, name), mode) as f:
        f.write(text)

# ---- scenarios (ppdsim run) -------------------------------------------------------------
BASE = {
    "head": f'name = "bad"\nseed = 1\nmodel = "llama-3.1-8b"\ngpu = "h100-sxm"\ncalibration = "{ROOT}calibration/h100-llama3.1-8b.json"\n',
    "workload": f'\n[workload]\ntrace = "{ROOT}traces/sharegpt-3000.jsonl"\nnum_conversations = 5\narrival = {{ kind = "poisson", rate_per_s = 1.0 }}\nthink_time = {{ kind = "constant", value_s = 0.0 }}\n',
    "extra": "",
    "slo": "\n[slo]\nttft_ms = 500.0\ntpot_ms = 50.0\n",
    "policy": '\n[[cluster]]\nshape = "1P_1pD"\n\n[[router]]\nkind = "pd"\n',
}

def scenario(name, **parts):
    p = dict(BASE)
    p.update(parts)
    write("scenarios", name + ".toml", p["head"] + p["workload"] + p["extra"] + p["slo"] + p["policy"])

def head_with(key, value):
    lines = BASE["head"].splitlines()
    out = [f"{key} = {value}" if l.startswith(key + " ") else l for l in lines]
    return "\n".join(out) + "\n"

def workload_with(key, value):
    lines = BASE["workload"].splitlines()
    found = False
    out = []
    for l in lines:
        if l.startswith(key + " "):
            out.append(f"{key} = {value}")
            found = True
        else:
            out.append(l)
    if not found:
        out.append(f"{key} = {value}")
    return "\n".join(out) + "\n"

BAD_NUMBERS = {"neg": "-1.0", "nan": "nan", "inf": "inf", "zero": "0.0"}
for k, v in [("name", '""'), ("name", '".."'), ("name", '"../../etc"'), ("name", '"a/b"'), ("name", '".hidden"')]:
    scenario(f"head_{k}_{v.strip(chr(34)).replace('/', '_').replace('.', 'dot') or 'empty'}", head=head_with(k, v))
scenario("head_seed_negative", head=head_with("seed", "-1"))
scenario("head_seed_string", head=head_with("seed", '"seven"'))
scenario("head_model_unknown", head=head_with("model", '"gpt-5"'))
scenario("head_gpu_unknown", head=head_with("gpu", '"tpu-v9"'))
scenario("head_calibration_missing", head=head_with("calibration", '"nowhere.json"'))
scenario("head_calibration_directory", head=head_with("calibration", f'"{ROOT}calibration"'))
scenario("head_unknown_key", head=BASE["head"] + "colour = \"red\"\n")
scenario("syntax_error", head=BASE["head"] + "this is not toml\n")
scenario("percentiles_empty", head=BASE["head"] + "percentiles = []\n")
scenario("percentiles_hundred", head=BASE["head"] + "percentiles = [50, 100]\n")
scenario("percentiles_negative", head=BASE["head"] + "percentiles = [-1]\n")
scenario("percentiles_not_numbers", head=BASE["head"] + "percentiles = [\"p99\"]\n")
for tag, v in {"zero": "0.0", "neg": "-1.0", "nan": "nan", "inf": "inf", "tiny": "1e-300"}.items():
    scenario(f"arrival_rate_{tag}", workload=workload_with("arrival", f'{{ kind = "poisson", rate_per_s = {v} }}'))
for tag, v in {"zero": "0.0", "neg": "-1.0", "nan": "nan", "inf": "inf", "huge": "1e300"}.items():
    scenario(f"think_mean_{tag}", workload=workload_with("think_time", f'{{ kind = "exponential", mean_s = {v} }}'))
scenario("think_constant_negative", workload=workload_with("think_time", '{ kind = "constant", value_s = -1.0 }'))
scenario("arrival_kind_unknown", workload=workload_with("arrival", '{ kind = "gamma", rate_per_s = 1.0 }'))
scenario("num_conversations_zero", workload=workload_with("num_conversations", "0"))
scenario("num_conversations_negative", workload=workload_with("num_conversations", "-5"))
scenario("num_conversations_too_many", workload=workload_with("num_conversations", "1000000000"))
scenario("template_negative", workload=workload_with("template_tokens_per_message", "-1"))
scenario("window_and_count", workload=workload_with("window_s", "10.0"))
scenario("order_unknown", workload=workload_with("order", '"random"'))
scenario("trace_missing", workload=workload_with("trace", '"nowhere.jsonl"'))
scenario("trace_is_a_directory", workload=workload_with("trace", f'"{ROOT}traces"'))
scenario("synthetic_no_turns", workload='\n[workload]\nsynthetic = { kind = "fixed", turns = [] }\nnum_conversations = 2\narrival = { kind = "burst" }\nthink_time = { kind = "constant", value_s = 0.0 }\n')
scenario("synthetic_zero_answer", workload='\n[workload]\nsynthetic = { kind = "fixed", turns = [[10, 0]] }\nnum_conversations = 2\narrival = { kind = "burst" }\nthink_time = { kind = "constant", value_s = 0.0 }\n')
scenario("synthetic_empty_prompt", workload='\n[workload]\nsynthetic = { kind = "fixed", turns = [[0, 10]] }\nnum_conversations = 2\narrival = { kind = "burst" }\nthink_time = { kind = "constant", value_s = 0.0 }\ntemplate_tokens_per_message = 0\n')
scenario("setup_with_count", workload='\n[workload]\nsynthetic = { kind = "fixed", turns = [[27, 20], [366, 256]] }\nnum_conversations = 2\narrival = { kind = "setup", rate_per_s = 1.0, duration_s = 60.0, setup_s = 30.0 }\nthink_time = { kind = "constant", value_s = 0.0 }\n')
scenario("setup_duration_zero", workload='\n[workload]\nsynthetic = { kind = "fixed", turns = [[27, 20], [366, 256]] }\narrival = { kind = "setup", rate_per_s = 1.0, duration_s = 0.0, setup_s = 30.0 }\nthink_time = { kind = "constant", value_s = 0.0 }\n')
for key, vals in {
    "token_budget": ["0"], "max_num_seqs": ["0"], "block_size": ["0"],
    "gpu_memory_utilization": ["0.0", "1.5", "nan"], "activation_reserve_gib": ["-2.0", "nan", "100.0"],
    "max_model_len": ["0"], "incremental_kv": ['"yes"'], "answer_mismatch_per_token": ["1.0", "-0.1"],
}.items():
    for v in vals:
        tag = v.strip('"').replace(".", "p").replace("-", "neg")
        scenario(f"engine_{key}_{tag}", extra=f"\n[engine]\n{key} = {v}\n")
scenario("engine_unknown_key", extra="\n[engine]\nmax_batch = 4\n")
H20 = f'calibration = "{ROOT}calibration/h20-llama3.1-8b-roofline.json"'
def pool_cluster(pool):
    return f'\n[[cluster]]\n[[cluster.pool]]\nrole = "prefill"\ncount = 1\n[[cluster.pool]]\n{pool}\n\n[[router]]\nkind = "pd"\n'
scenario("pool_gpu_unknown", policy=pool_cluster(f'role = "decode"\ncount = 1\ngpu = "tpu-v9"\n{H20}'))
scenario("pool_calibration_missing", policy=pool_cluster('role = "decode"\ncount = 1\ngpu = "h20"\ncalibration = "nowhere.json"'))
scenario("pool_calibration_needed", policy=pool_cluster('role = "decode"\ncount = 1\ngpu = "h20"'))
scenario("pool_calibration_wrong_gpu", policy=pool_cluster(f'role = "decode"\ncount = 1\ngpu = "a100-sxm-80gb"\n{H20}'))
scenario("pool_calibration_wrong_tp", policy=pool_cluster(f'role = "decode"\ncount = 1\ngpu = "h20"\ntp = 2\n{H20}'))
scenario("pool_tp_zero", policy=pool_cluster(f'role = "decode"\ncount = 1\ngpu = "h20"\ntp = 0\n{H20}'))
scenario("pool_written_first_gpu_unknown", policy=f'\n[[cluster]]\n[[cluster.pool]]\nrole = "direct-decode"\ncount = 1\ngpu = "tpu-v9"\n{H20}\n[[cluster.pool]]\nrole = "prefill"\ncount = 1\n\n[[router]]\nkind = "pd"\n')
scenario("pool_role_unknown", policy=pool_cluster('role = "router"\ncount = 1'))
scenario("pool_count_zero", policy=pool_cluster('role = "decode"\ncount = 0'))
scenario("pool_unknown_key", policy=pool_cluster('role = "decode"\ncount = 1\nmemory_gib = 80'))
scenario("pool_kv_load_ms_negative", policy=pool_cluster('role = "decode"\ncount = 1\nkv_load_ms = -2.5'))
for key, vals in {"bandwidth_gbps": ["0.0", "-1.0", "nan", "inf", "1e-300"], "latency_ms": ["-1.0", "nan", "inf"], "transfer": ['"partial"']}.items():
    for v in vals:
        tag = v.strip('"').replace(".", "p").replace("-", "neg")
        scenario(f"kv_link_{key}_{tag}", extra=f"\n[kv_link]\n{key} = {v}\n")
for key in ["request_overhead_ms", "pd_handoff_ms", "request_service_ms", "prompt_ms_per_token", "pd_handoff_p_service_ms"]:
    for tag, v in {"neg": "-1.0", "nan": "nan", "inf": "inf"}.items():
        scenario(f"overheads_{key}_{tag}", extra=f"\n[overheads]\n{key} = {v}\n")
for tag, v in {"neg": "-0.5", "nan": "nan", "huge": "11.0"}.items():
    scenario(f"overheads_service_cv_{tag}", extra=f"\n[overheads]\nservice_cv = {v}\n")
for tag, v in {"neg": "-1.0", "nan": "nan", "huge": "101.0"}.items():
    scenario(f"overheads_stream_ms_per_chunk_{tag}", extra=f"\n[overheads]\nstream_ms_per_chunk = {v}\n")
for tag, v in {"neg": "-0.1", "above_one": "1.5", "nan": "nan"}.items():
    scenario(f"client_requeue_rate_{tag}", extra=f"\n[client]\nrequeue_rate = {v}\n")
scenario("overheads_pd_handoff_queue_unknown", extra='\n[overheads]\npd_handoff_queue = "per-p"\n')
scenario("kv_link_prefill_waits_for_send_not_bool", extra='\n[kv_link]\nprefill_waits_for_send = "yes"\n')
for tag, v in {"neg": "-2.0", "nan": "nan", "huge": "1001.0"}.items():
    scenario(f"kv_link_load_ms_{tag}", extra=f"\n[kv_link]\nload_ms = {v}\n")
scenario("overheads_service_above_total", extra="\n[overheads]\nrequest_overhead_ms = 10.0\nrequest_service_ms = 20.0\n")
scenario("overheads_handoff_shares_above_total", extra="\n[overheads]\npd_handoff_ms = 10.0\npd_handoff_p_service_ms = 8.0\npd_handoff_d_service_ms = 8.0\n")
for key, vals in {"max_connections": ["0"], "request_timeout_s": ["0.0", "-1.0", "nan", "inf"], "preset": ['"locust"']}.items():
    for v in vals:
        tag = v.strip('"').replace(".", "p").replace("-", "neg")
        scenario(f"client_{key}_{tag}", extra=f"\n[client]\n{key} = {v}\n")
for v in ["-0.1", "1.5", "nan"]:
    scenario(f"proxy_affinity_miss_rate_{v.replace('.', 'p').replace('-', 'neg')}", extra=f"\n[proxy]\naffinity_miss_rate = {v}\n")
scenario("proxy_pinning_unknown", extra='\n[proxy]\npinning = "random"\n')
for key in ["ttft_ms", "tpot_ms"]:
    for tag, v in {"zero": "0.0", "neg": "-1.0", "nan": "nan", "inf": "inf"}.items():
        slo = BASE["slo"].replace(f"{key} = ", f"{key} = {v} #")
        scenario(f"slo_{key}_{tag}", slo=slo)
scenario("slo_missing", slo="")
C = '\n[[cluster]]\nshape = "1P_1pD"\n'
scenario("cluster_none", policy='\n[[router]]\nkind = "pd"\n')
scenario("router_none", policy=C)
scenario("router_kind_unknown", policy=C + '\n[[router]]\nkind = "magic"\n')
scenario("cluster_shape_unknown", policy='\n[[cluster]]\nshape = "2X_1D"\n\n[[router]]\nkind = "pd"\n')
scenario("cluster_shape_and_pools", policy='\n[[cluster]]\nshape = "1P_1D"\n[[cluster.pool]]\nrole = "replica"\ncount = 1\n\n[[router]]\nkind = "pd"\n')
scenario("cluster_empty", policy='\n[[cluster]]\nname = "nothing"\n\n[[router]]\nkind = "pd"\n')
scenario("cluster_decode_without_prefill", policy='\n[[cluster]]\nshape = "2D"\n\n[[router]]\nkind = "pd"\n')
scenario("cluster_prefill_only", policy='\n[[cluster]]\nshape = "2P"\n\n[[router]]\nkind = "pd"\n')
scenario("cluster_huge", policy='\n[[cluster]]\nshape = "100000000R"\n\n[[router]]\nkind = "replication"\n')
scenario("cluster_duplicate_names", policy=C + C + '\n[[router]]\nkind = "pd"\n')
scenario("cluster_name_dotdot", policy='\n[[cluster]]\nname = ".."\nshape = "1P_1pD"\n\n[[router]]\nkind = "pd"\n')
scenario("router_direct_decode_without_prefill", policy='\n[[cluster]]\nshape = "2pD"\n\n[[router]]\nkind = "ppd"\n')
scenario("router_unknown_key", policy=C + '\n[[router]]\nkind = "ppd"\nthreshold = 3\n')
scenario("router_unknown_cluster", policy=C + '\n[[router]]\nkind = "ppd"\nclusters = ["4R"]\n')
scenario("router_duplicate_names", policy=C + '\n[[router]]\nkind = "pd"\n\n[[router]]\nkind = "pd"\n')
scenario("router_adaptive_cache_rate", policy=C + '\n[[router]]\nkind = "adaptive"\nmax_local_append_tokens = 512\nmin_cache_rate = 1.5\n')
scenario("router_adaptive_hysteresis_reversed", policy=C + '\n[[router]]\nkind = "adaptive"\nmax_local_append_tokens = 512\nhysteresis = { high_backlog_tokens = 100, low_backlog_tokens = 4096 }\n')
scenario("router_predictive_weight_negative", policy=C + '\n[[router]]\nkind = "predictive"\nstall_weight = -1.0\n')
# The form before clusters and routers were declared apart: refused, naming the new keys.
scenario("old_form_policy", policy='\n[[policy]]\nkind = "pd"\nprefill_instances = 2\ndecode_instances = 2\n\n[[policy]]\nkind = "mixed"\nreplica_instances = 1\nprefill_instances = 1\ndecode_instances = 1\ndirect_decode_instances = 1\n')
scenario("old_form_router_table", extra='\n[router]\npinning = "hash"\n', policy='\n[[policy]]\nkind = "replication"\ninstances = 4\n')
scenario("old_form_router_table_beside_routers", extra='\n[router]\npinning = "hash"\n')
scenario("old_form_pools", extra=f'\n[pools.decode]\ngpu = "h20"\n{H20}\n')

write("scenarios", "empty_prompt_trace.jsonl", '{"id":"ok","turns":[{"user_tokens":5,"assistant_tokens":3}]}\n\n{"id":"silent","turns":[{"user_tokens":0,"assistant_tokens":3}]}\n')
scenario("trace_empty_prompt", workload='\n[workload]\ntrace = "empty_prompt_trace.jsonl"\nnum_conversations = 2\narrival = { kind = "burst" }\nthink_time = { kind = "constant", value_s = 0.0 }\ntemplate_tokens_per_message = 0\n')
scenario("trace_duplicate_ids", workload=f'\n[workload]\ntrace = "{ROOT}tests/data/invalid/traces/duplicate_ids.jsonl"\nnum_conversations = 2\narrival = {{ kind = "burst" }}\nthink_time = {{ kind = "constant", value_s = 0.0 }}\n')

# ---- sweeps (ppdsim sweep) --------------------------------------------------------------
def sweep(name, body):
    write("sweeps", name + ".toml", f'scenario = "{ROOT}tests/data/scenarios/small.toml"\n' + body)
sweep("rates_empty", "rates_per_s = []\n")
sweep("rates_descending", "rates_per_s = [2.0, 1.0]\n")
sweep("rates_negative", "rates_per_s = [-1.0, 1.0]\n")
sweep("rates_nan", "rates_per_s = [nan]\n")
sweep("rates_tiny", "rates_per_s = [1e-300]\n")
sweep("seeds_duplicate", "rates_per_s = [1.0]\nseeds = [7, 7]\n")
sweep("seeds_empty", "rates_per_s = [1.0]\nseeds = []\n")
sweep("metrics_empty", "rates_per_s = [1.0]\nmetrics = []\n")
sweep("metrics_unknown", 'rates_per_s = [1.0]\nmetrics = ["latency"]\n')
sweep("target_zero", "rates_per_s = [1.0]\nslo_attainment_target = 0.0\n")
sweep("target_above_one", "rates_per_s = [1.0]\nslo_attainment_target = 1.5\n")
sweep("vary_unknown_router", 'rates_per_s = [1.0]\n[[vary]]\nrouter = "nope"\nkey = "stall_weight"\nvalues = [1]\n')
sweep("vary_unknown_key", 'rates_per_s = [1.0]\n[[vary]]\nrouter = "pd"\nkey = "threshold"\nvalues = [1]\n')
sweep("vary_unsweepable_key", 'rates_per_s = [1.0]\n[[vary]]\nrouter = "ppd"\nkey = "clusters"\nvalues = [0]\n')
write("sweeps", "vary_bad_value.toml", f'scenario = "{ROOT}tests/data/scenarios/predictive.toml"\nrates_per_s = [1.0]\n[[vary]]\nrouter = "stall-weighted"\nkey = "stall_weight"\nvalues = [-1.0]\n')
sweep("vary_old_form_policy", 'rates_per_s = [1.0]\n[[vary]]\npolicy = "pd"\nkey = "threshold"\nvalues = [1]\n')
sweep("grid_too_large", "rates_per_s = [" + ", ".join(str(1.0 + i) for i in range(100)) + "]\nseeds = [" + ", ".join(str(i) for i in range(60)) + "]\n")
write("sweeps", "scenario_missing.toml", 'scenario = "nowhere.toml"\nrates_per_s = [1.0]\n')
write("sweeps", "not_toml.toml", "rates_per_s = [1.0\n")

# ---- native traces (ppdsim trace stats) ------------------------------------------------
def trace(name, text, binary=False):
    write("traces", name, text, binary)
trace("malformed_json.jsonl", '{"id":"a","turns":[\n')
trace("no_turns.jsonl", '{"id":"a","turns":[]}\n')
trace("zero_answer.jsonl", '{"id":"a","turns":[{"user_tokens":5,"assistant_tokens":0}]}\n')
trace("negative_tokens.jsonl", '{"id":"a","turns":[{"user_tokens":-5,"assistant_tokens":3}]}\n')
trace("arrival_negative.jsonl", '{"id":"a","turns":[{"user_tokens":5,"assistant_tokens":3}],"arrival_s":-1.0}\n')
trace("unknown_key.jsonl", '{"id":"a","turns":[{"user_tokens":5,"assistant_tokens":3}],"colour":"red"}\n')
trace("empty.jsonl", "")
trace("only_blank_lines.jsonl", "\n\n\n")
trace("binary.jsonl.gz", bytes(range(256)) * 4, binary=True)
trace("truncated.jsonl.gz", gzip.compress(b'{"id":"a","turns":[{"user_tokens":5,"assistant_tokens":3}]}\n' * 50)[:40], binary=True)
trace("duplicate_ids.jsonl", '{"id":"a","turns":[{"user_tokens":5,"assistant_tokens":3}]}\n\n{"id":"a","turns":[{"user_tokens":7,"assistant_tokens":2}]}\n')
trace("tokens_not_integers.jsonl", '{"id":"a","turns":[{"user_tokens":5.5,"assistant_tokens":3}]}\n')

# ---- imports (ppdsim trace import FORMAT) ----------------------------------------------
write("import-sharegpt", "not_json.json", "this is not json")
write("import-sharegpt", "empty_list.json", "[]")
write("import-sharegpt", "no_usable_conversation.json", json.dumps([{"id": "x", "conversations": [{"from": "gpt", "value": "hi"}]}]))
write("import-sharegpt", "wrong_shape.json", json.dumps({"id": "x"}))
write("import-mooncake", "malformed.jsonl", '{"timestamp": 0, "input_length":\n')
write("import-mooncake", "all_outputs_zero.jsonl", "".join(json.dumps({"timestamp": i, "input_length": 100, "output_length": 0, "hash_ids": [i]}) + "\n" for i in range(5)))
write("import-mooncake", "missing_field.jsonl", json.dumps({"timestamp": 0, "input_length": 100}) + "\n")
write("import-azure", "wrong_header.csv", "time,tokens\n1,2\n")
write("import-azure", "bad_timestamp.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,10,5\n")
write("import-azure", "negative_tokens.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,-10,5\n")
write("import-azure", "no_rows.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n")
write("import-azure", "all_without_prompt.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,0,5\n2023-11-16 18:15:47.6805900,0,7\n")
write("import-vidur", "wrong_header.csv", "a,b\n1,2\n")
write("import-vidur", "negative_tokens.csv", "num_prefill_tokens,num_decode_tokens\n-1,5\n")

# ---- measurements (ppdsim calibrate) ---------------------------------------------------
LLM_HEADER = "layer_name,input,kv_cache,tp_size,latency(ns)\n"
write("measurements", "unknown_format.json", '{"hello": 1}')
write("measurements", "llmservingsim_negative_latency.csv", LLM_HEADER + "embedding,1,0,1,-5000\n")
write("measurements", "llmservingsim_nan_latency.csv", LLM_HEADER + "embedding,1,0,1,nan\n")
write("measurements", "native_batch_zero.jsonl", '{"kind":"decode_step","batch_size":0,"context_tokens":100,"latency_ms":5.0}\n')
write("measurements", "native_negative_latency.jsonl", '{"kind":"prefill","num_new_tokens":100,"latency_ms":-3.0}\n')
write("measurements", "native_mixed_models.jsonl", '{"kind":"prefill","num_new_tokens":100,"latency_ms":10.0,"model":"llama-3.1-8b","hardware":"h100-sxm"}\n{"kind":"prefill","num_new_tokens":200,"latency_ms":20.0,"model":"qwen3-8b","hardware":"h100-sxm"}\n')
write("measurements", "native_zero_tokens.jsonl", '{"kind":"prefill","num_new_tokens":0,"latency_ms":3.0}\n')
write("measurements", "native_transfer_zero_bytes.jsonl", '{"kind":"kv_transfer","bytes":0,"latency_ms":3.0}\n')
write("measurements", "ppd_framework_negative_ttft.json", json.dumps({"config": {"model": "meta-llama/Llama-3.1-8B"}, "results": [{"test_case": {"context_length": 1024, "append_length": 128, "cache_rate": 0.888889}, "metrics": {"ttft_ms": -20.9}}]}))
write("measurements", "aiconfigurator_negative_latency.csv", "m,n,k,latency_ms\n1,4096,4096,-0.01\n")
write("measurements", "kv_transfer_zero_time.csv", "source_table,engine,model,gpu,tp_per_instance,network,prompt_len_tokens,mean_ttft_ms,kv_size_reported,kv_bytes_approx,transfer_time_ms,bandwidth_GBps,bandwidth_utilization_pct,bytes_per_token_approx\nvllm_v1_pd,vLLM 0.11.2 + MooncakeConnector,Qwen3-8B,H800-81GB,8,RoCE,128,46.09,20 MB,20971520,0,36.53,18.3,163840\n")
write("measurements", "truncated.json.gz", gzip.compress(b'{"results": [' + b'1,' * 1000 + b'1]}')[:30], binary=True)
write("measurements", "empty.csv", "")
# (an endless line is made at run time by tests/it/safety.rs: 17 MiB does not belong in git)

# ---- model files (ppdsim routing-map -c) -----------------------------------------------
def model(name, edit):
    m = json.load(open(os.path.join(HERE, "../../../calibration/h100-llama3.1-8b-eager.json")))
    edit(m)
    write("models", name + ".json", json.dumps(m, indent=1))

def all_zero(m):
    for c in m["iteration"]["coefficients"]:
        c["value"] = 0.0
def negative_beta1(m):
    m["iteration"]["coefficients"][1]["value"] = -1e-3
def missing_beta4(m):
    m["iteration"]["coefficients"].pop()
def old_schema(m):
    m["schema_version"] = 1
def decode_too_fast(m):
    m["iteration"]["coefficients"][0]["value"] = 1.0
    m["iteration"]["coefficients"][3]["value"] = 0.0
def service_cv_negative(m):
    m["overheads"]["service_cv"] = -0.5
model("service_cv_negative", service_cv_negative)
def client_requeue_rate_above_one(m):
    m["overheads"]["client_requeue_rate"] = 1.5
model("client_requeue_rate_above_one", client_requeue_rate_above_one)
def stream_ms_per_chunk_negative(m):
    m["overheads"]["stream_ms_per_chunk"] = -0.3
model("stream_ms_per_chunk_negative", stream_ms_per_chunk_negative)
def pd_handoff_queue_unknown(m):
    m["overheads"]["pd_handoff_queue"] = "engine"
model("pd_handoff_queue_unknown", pd_handoff_queue_unknown)
def prefill_waits_for_send_not_bool(m):
    m["kv_transfer"]["prefill_waits_for_send"] = 1
model("prefill_waits_for_send_not_bool", prefill_waits_for_send_not_bool)
def kv_load_ms_negative(m):
    m["kv_transfer"]["load_ms"] = -8.9
model("kv_load_ms_negative", kv_load_ms_negative)
model("all_beta_zero", all_zero)
model("negative_beta1", negative_beta1)
model("missing_beta4", missing_beta4)
model("old_schema_version", old_schema)
model("decode_faster_than_weights", decode_too_fast)
write("models", "not_json.json", "calibration? no")
