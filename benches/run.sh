#!/usr/bin/env bash
# ppdsim's performance benchmark: builds the release binary, runs each benchmark command of the
# README's Performance section and prints its wall time and peak memory next to the target.
#
#   bash benches/run.sh                 # everything (≈ 3 minutes on 2 cores)
#   bash benches/run.sh --quick         # without the 1,000,000-conversation run
#   bash benches/run.sh --instructions  # instruction counts instead (valgrind; ≈ 1 minute)
#   bash benches/run.sh --functions     # Vidur's run's simulation, instructions by function
#                                       # (valgrind; its own build, ≈ 3 minutes the first time)
#
# Outputs go to output/bench-* (ppdsim's own directories; --force replaces only what ppdsim
# wrote). Wall time and peak RSS come from GNU time (`/usr/bin/time`); without it only the wall
# time is printed. Each command but the 1M run is timed twice and the faster run printed: on
# shared machines the same work varies by tens of percent from minute to minute.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."

quick=false
[[ "${1:-}" == "--quick" ]] && quick=true

# --functions: where the simulation's instructions go, function by function. The release build
# inlines the event handlers into `Simulation::step` (whole-program LTO), so this builds the same
# profile with the `profile-functions` feature, which keeps the simulator's handlers, scheduling
# pass and decode-run functions out of line (≈ 3% more instructions), with line tables, into
# target/profile-functions; then it runs Vidur's run under callgrind on two threads (so that,
# as in a real run, its `requests.csv` rows are formatted beside the simulation, not inside
# `conversation_done`) and prints each simulator function's inclusive instructions, its share of
# `Simulation::run`, its calls and the instructions per call.
if [[ "${1:-}" == "--functions" ]]; then
    command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }
    CARGO_PROFILE_RELEASE_DEBUG=line-tables-only cargo build --release -q \
        --features profile-functions --target-dir target/profile-functions
    out=$(mktemp)
    trap 'rm -f "$out" "$out.log"' EXIT
    RAYON_NUM_THREADS=2 valgrind --tool=callgrind --callgrind-out-file="$out" \
        target/profile-functions/release/ppdsim run scenarios/vidur-arxiv-qps2.toml \
        -q --no-plots -o output/bench-functions --force >/dev/null 2>"$out.log" \
        || { cat "$out.log" >&2; exit 1; }
    echo "Vidur's run's simulation by function, $(date -u +%Y-%m-%d) (callgrind, 2 threads, profile-functions build)"
    printf "%15s %7s %9s %9s  %s\n" "instructions" "of run" "calls" "per call" "function (inclusive)"
    # `--tree=caller` lists each function's callers ("< … (Nx)") above its own line ("* …"); a
    # function may appear under more than one source path (with line tables, the path of its
    # first instruction): the entry with the most instructions, and the most calls, are its own.
    callgrind_annotate --tree=caller --inclusive=yes "$out" | awk '
        / < / { if (match($0, /\([0-9,]+x\)/)) { c = substr($0, RSTART + 1, RLENGTH - 3); gsub(",", "", c); calls += c } next }
        / \*  / {
            if ($0 ~ /ppdsim::sim::/) {
                n = $1; gsub(",", "", n); name = $0
                sub(/.*:ppdsim::sim::/, "", name); sub(/ \[.*/, "", name)
                if (n + 0 > incl[name] + 0) incl[name] = n
                if (calls > ncalls[name] + 0) ncalls[name] = calls
            }
            calls = 0; next
        }
        /^$/ { calls = 0 }
        END { for (f in incl) printf "%s\t%d\t%s\n", incl[f], ncalls[f], f }' | sort -rn | head -26 | awk -F '\t' '
        { n[NR] = $1; c[NR] = $2; f[NR] = $3; if ($3 == "Simulation::run") run = $1 }
        END {
            if (!run) { print "Simulation::run not found in the profile" > "/dev/stderr"; exit 1 }
            for (i = 1; i <= NR; i++)
                printf "%15d %6.1f%% %9d %9d  %s\n", n[i], 100 * n[i] / run, c[i], (c[i] > 0 ? n[i] / c[i] : 0), f[i]
        }'
    exit 0
fi

cargo build --release -q
bin=target/release/ppdsim

# --instructions: counts the instructions of Vidur's run and of the 1M benchmark's workload at
# 5,000 conversations on one thread with valgrind's callgrind. Unlike wall time these counts do
# not move with the machine's load, so they compare two builds exactly (the README quotes both).
if [[ "${1:-}" == "--instructions" ]]; then
    command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }
    count() {
        local label=$1
        shift
        local out
        out=$(RAYON_NUM_THREADS=1 valgrind --tool=callgrind --callgrind-out-file=/dev/null "$@" 2>&1 >/dev/null \
            | sed -n 's/.*Collected : \([0-9]*\).*/\1/p')
        printf "%-58s %15s instructions\n" "$label" "$(echo "$out" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta')"
    }
    echo "ppdsim instruction counts, $(date -u +%Y-%m-%d) (valgrind --tool=callgrind, 1 thread)"
    count "Vidur's 10,000-request run" \
        "$bin" run scenarios/vidur-arxiv-qps2.toml -q --no-plots -o output/bench-vidur --force
    count "1M benchmark's workload at 5,000 conversations x 4 policies" \
        "$bin" run benches/synthetic-1m-3turn.toml --set workload.num_conversations=5000 \
        -q --no-plots -o output/bench-5k --force
    exit 0
fi

tmp=$(mktemp)
trap 'rm -f "$tmp" "$tmp.wall"' EXIT

# measure LABEL TARGET COMMAND...: runs COMMAND $REPEAT times (default 2), prints the fastest
# run's "LABEL  wall  peak RSS  CPU time (user + system)  target" and leaves its wall time in
# $tmp.wall. The CPU time shows what the wall time alone hides on a shared machine: the same
# work took 45.5 s of user time in one minute and 27.7 s a quarter of an hour later (the 1M run,
# same build, 2026-12-03), so a slow wall time with a high CPU time is the host's, not ppdsim's.
measure() {
    local label=$1 target=$2
    shift 2
    local best="" best_rss="-" best_cpu="-" wall rss user sys cpu
    for _ in $(seq "${REPEAT:-2}"); do
        if [[ -x /usr/bin/time ]]; then
            /usr/bin/time -f "%e %M %U %S" -o "$tmp" "$@" >/dev/null
            read -r wall rss user sys <"$tmp"
            rss="$((rss / 1024)) MB"
            cpu="$(printf "%.2f" "$(echo "$user + $sys" | bc)") s cpu"
        else
            local start end
            start=$(date +%s.%N)
            "$@" >/dev/null
            end=$(date +%s.%N)
            wall=$(echo "$end - $start" | bc)
            rss="-"
            cpu="-"
        fi
        if [[ -z "$best" ]] || (($(echo "$wall < $best" | bc))); then
            best=$wall
            best_rss=$rss
            best_cpu=$cpu
        fi
    done
    printf "%-58s %8s s %10s %14s   target %s\n" "$label" "$best" "$best_rss" "$best_cpu" "$target"
    echo "$best" >"$tmp.wall"
}

echo "ppdsim benchmark, $(date -u +%Y-%m-%d), $(nproc) cores"
# How fast the machine is right now: the 1M benchmark's workload at 20,000 conversations, one
# thread, no requests.csv (a fiftieth of the 1M benchmark's simulation work; 0.48 s on the
# development machine in a fast minute of 2026-12-03). A reference well above that means the host
# is slowing every figure below by about as much.
# It is taken again at the end: the host's speed drifts from minute to minute, and the two
# readings bracket the figures between them. Each reading also runs two copies at once (one per
# core): a pair much slower than one copy means the host is not giving this machine two whole
# cores, which slows every 2-thread figure (the sweep's speed-up, the 1M run) and not the
# 1-thread ones.
reference() {
    local ref=("$bin" run benches/synthetic-1m-3turn.toml --set workload.num_conversations=20000
        -q --no-plots --no-requests --force)
    REPEAT=3 RAYON_NUM_THREADS=1 measure "machine-speed reference ($1, 1M workload at 20,000, 1 thread)" \
        "≈ 0.48 s on a quiet host (2026-12-03), 0.30–0.33 s (2026-12-07)" "${ref[@]}" -o output/bench-reference
    local best="" start end
    for _ in 1 2 3; do
        start=${EPOCHREALTIME/./}
        RAYON_NUM_THREADS=1 "${ref[@]}" -o output/bench-reference-a >/dev/null &
        local a=$!
        RAYON_NUM_THREADS=1 "${ref[@]}" -o output/bench-reference-b >/dev/null &
        # Each copy's exit status (a failed copy stops the benchmark, as a failed measure does).
        wait "$a"
        wait $!
        end=${EPOCHREALTIME/./}
        if [[ -z "$best" ]] || ((end - start < best)); then best=$((end - start)); fi
    done
    printf "%-58s %8s s   (as one copy on a machine with two whole cores)\n" "  two copies at once" \
        "$(printf "%d.%02d" $((best / 1000000)) $(((best % 1000000) / 10000)))"
}
reference "before"
# median21 DIR COMMAND...: runs `COMMAND -o DIR` 21 times, DIR removed before each, and prints the
# median wall time in seconds with 4 decimals (bash's microsecond clock). A failed run stops the
# benchmark (inherit_errexit), as a failed measure does.
median21() {
    local dir=$1 walls=() start end
    shift
    for _ in $(seq 21); do
        rm -rf "$dir"
        start=${EPOCHREALTIME/./}
        "$@" -o "$dir" >/dev/null
        end=${EPOCHREALTIME/./}
        walls+=("$((end - start))")
    done
    local us
    us=$(printf "%s\n" "${walls[@]}" | sort -n | sed -n 11p)
    printf "%d.%04d" $((us / 1000000)) $(((us % 1000000) / 100))
}
# median21_ab DIR_A DIR_B FLAG COMMAND...: runs `COMMAND -o DIR_A` and `COMMAND FLAG -o DIR_B` 21
# times each, alternating (so that a minute's drift in the host's speed falls on both alike), and
# prints the two medians as median21 does, separated by a space.
median21_ab() {
    local dir_a=$1 dir_b=$2 flag=$3 walls_a=() walls_b=() start end
    shift 3
    for _ in $(seq 21); do
        rm -rf "$dir_a" "$dir_b"
        start=${EPOCHREALTIME/./}
        "$@" -o "$dir_a" >/dev/null
        end=${EPOCHREALTIME/./}
        walls_a+=("$((end - start))")
        start=${EPOCHREALTIME/./}
        "$@" "$flag" -o "$dir_b" >/dev/null
        end=${EPOCHREALTIME/./}
        walls_b+=("$((end - start))")
    done
    local a b
    a=$(printf "%s\n" "${walls_a[@]}" | sort -n | sed -n 11p)
    b=$(printf "%s\n" "${walls_b[@]}" | sort -n | sed -n 11p)
    printf "%d.%04d %d.%04d" $((a / 1000000)) $(((a % 1000000) / 100)) $((b / 1000000)) $(((b % 1000000) / 100))
}
# Vidur's run takes tens of ms, below GNU time's 10 ms resolution: it is timed 21 times with
# bash's microsecond clock and the median printed (peak RSS from one more run under GNU time). Each run
# writes a fresh folder, as a first run does (replacing a previous run's files with --force
# costs the same within the noise: old files are moved aside, not renamed over).
# A single-run trace replay is fed its conversations as the trace is read, when the output
# folder's parent exists (so that every run here, the first included, takes that path).
mkdir -p output
# Timed with and without --read-trace-first (the whole trace read before the run starts, as
# before 2026-12-06 and as runs of several policies still do), alternating.
# A failed run stops the benchmark (a command substitution, as median21's).
ab=$(median21_ab output/bench-vidur output/bench-vidur-first --read-trace-first \
    "$bin" run scenarios/vidur-arxiv-qps2.toml -q --no-plots)
read -r vidur_s first_s <<<"$ab"
rss="-"
if [[ -x /usr/bin/time ]]; then
    /usr/bin/time -f "%M" -o "$tmp" "$bin" run scenarios/vidur-arxiv-qps2.toml -q --no-plots -o output/bench-vidur --force >/dev/null
    rss="$(($(cat "$tmp") / 1024)) MB"
fi
printf "%-58s %8s s %10s %14s   target %s\n" "Vidur's 10,000-request run (scenarios/vidur-arxiv-qps2.toml)" \
    "$vidur_s" "$rss" "-" "<= 0.015 s, <= 30 MB (Vidur: 150 s, 616 MB); median of 21"
printf "%-58s %8s s   (median of 21, alternating with the run above)\n" \
    "  the same, the trace read first (--read-trace-first)" "$first_s"
# The same run cut to its first 10 conversations: what the run costs besides simulating (starting,
# reading and parsing the whole trace, writing the files), timed the same way.
fixed_s=$(median21 output/bench-vidur-10 "$bin" run scenarios/vidur-arxiv-qps2.toml \
    --set workload.num_conversations=10 -q --no-plots)
printf "%-58s %8s s   (the fixed part; median of 21)\n" "  the same, first 10 conversations only" "$fixed_s"
measure "3,000 ShareGPT conversations x 4 policies, no figures" "-" \
    "$bin" run benches/sharegpt-3000-rate10.toml -q --no-plots -o output/bench --force
measure "the same with its 10 figures" "-" \
    "$bin" run benches/sharegpt-3000-rate10.toml -q -o output/bench --force
RAYON_NUM_THREADS=1 measure "default sweep (192 runs + 12 figures), 1 thread" "-" \
    "$bin" sweep sweeps/default-load.toml -q -o output/bench-sweep-1 --force
one=$(cat "$tmp.wall")
RAYON_NUM_THREADS=2 measure "default sweep, 2 threads" ">= 1.8x faster than 1 thread" \
    "$bin" sweep sweeps/default-load.toml -q -o output/bench-sweep-2 --force
two=$(cat "$tmp.wall")
if cmp -s output/bench-sweep-1/sweep.csv output/bench-sweep-2/sweep.csv; then same="identical sweep.csv"; else same="sweep.csv DIFFERS"; fi
printf "%-58s %8s x   (%s)\n" "  speed-up on 2 threads" "$(echo "scale=2; $one / $two" | bc)" "$same"
if ! $quick; then
    REPEAT=1 measure "1,000,000 3-turn conversations x 4 policies" "<= 20 s, <= 1 GB" \
        "$bin" run benches/synthetic-1m-3turn.toml -q --no-plots -o output/bench-1m --force
    # The same without the 1.8 GB requests.csv (summaries identical).
    REPEAT=1 measure "the same with --no-requests" "-" \
        "$bin" run benches/synthetic-1m-3turn.toml -q --no-plots --no-requests -o output/bench-1m-summaries --force
fi
reference "after"
