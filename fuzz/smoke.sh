#!/usr/bin/env bash
# Smoke-runs every fuzz target for a short budget, as CI does:
#
#   fuzz/smoke.sh                    # every target, 30 s each
#   FUZZ_SECONDS=300 fuzz/smoke.sh   # longer
#   fuzz/smoke.sh core_ops handshake # some targets
#   FUZZ_SANITIZER=none fuzz/smoke.sh  # without AddressSanitizer (CI: a faster build)
#   FUZZ_KEEP=/tmp/fuzz-runs fuzz/smoke.sh  # keep each target's log and new inputs there
#   FUZZ_OPT_LEVEL=1 fuzz/smoke.sh   # optimize less (CI: a faster build, about as many runs)
#
# Each target starts from the committed corpus (fuzz/corpus/<target>/, read only); what a run
# finds goes to a scratch directory, so the committed corpus stays small (with FUZZ_KEEP=DIR,
# to DIR/<target>.corpus, with the log as DIR/<target>.log, to inspect or merge). A crash (panic,
# failed invariant, sanitizer report, or an input slower than FUZZ_TIMEOUT seconds) makes
# the script exit non-zero; libFuzzer leaves the input in fuzz/artifacts/<target>/. Fix the
# bug, then commit that input under fuzz/corpus/<target>/ as a regression: the corpus replay
# tests run it on stable from then on (core/tests/fuzz_corpus.rs for envelope,
# gossip_message, handshake and core_ops; transport-sim/src/fuzzing.rs for sim_schedule;
# discovery/tests/fuzz_corpus.rs for membership; msp/tests/fuzz_corpus.rs for msp;
# transport-tonic/tests/fuzz_corpus.rs for grpc_framing).
set -euo pipefail
cd "$(dirname "$0")"

seconds="${FUZZ_SECONDS:-30}"
timeout_s="${FUZZ_TIMEOUT:-10}"
# AddressSanitizer by default. The workspace denies unsafe code, so it watches only the
# dependencies' unsafe code; panics, time-outs and memory blow-ups are caught without it.
sanitizer="${FUZZ_SANITIZER:-address}"
keep="${FUZZ_KEEP:-}"
# cargo fuzz builds every crate at opt-level 3 with one codegen unit. At opt-level 1 the seven
# targets built in 120 s instead of 175 s on a 2-core VM, and ran about as many inputs a second
# (0.6-1.3 times as many, target by target), so CI's short runs take it.
[ -z "${FUZZ_OPT_LEVEL:-}" ] || export CARGO_PROFILE_RELEASE_OPT_LEVEL="$FUZZ_OPT_LEVEL"
[ -z "$keep" ] || mkdir -p "$keep"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi
# cargo fuzz needs nightly (-Zsanitizer); stable works with RUSTC_BOOTSTRAP=1.
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    fuzz=(cargo +nightly fuzz)
else
    fuzz=(env RUSTC_BOOTSTRAP=1 cargo fuzz)
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <("${fuzz[@]}" list)
fi

# Only the targets named: `cargo fuzz build` builds every target unless given one (it takes
# at most one), and building all eight for one took minutes.
if [ "$#" -gt 0 ]; then
    for t in "${targets[@]}"; do
        "${fuzz[@]}" build -s "$sanitizer" "$t"
    done
else
    "${fuzz[@]}" build -s "$sanitizer"
fi

failed=0
for t in "${targets[@]}"; do
    if [ -n "$keep" ]; then
        scratch="$keep/$t.corpus"
        log="$keep/$t.log"
        mkdir -p "$scratch"
    else
        scratch="$(mktemp -d)"
        log="$(mktemp)"
    fi
    status=ok
    if ! "${fuzz[@]}" run -s "$sanitizer" "$t" "$scratch" "corpus/$t" -- \
        -max_total_time="$seconds" -timeout="$timeout_s" -print_final_stats=1 >"$log" 2>&1; then
        status=CRASH
        failed=1
    fi
    stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -n 1 || true; }
    seeds=$(find "corpus/$t" -type f | wc -l)
    found=$(find "$scratch" -type f | wc -l)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2 || true)
    ft=$(grep -o 'ft: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2 || true)
    # corpus=S+N: seed files, then inputs this run added (libFuzzer may load fewer seeds:
    # it keeps those that add coverage).
    printf '%-15s %-5s execs=%s exec/s=%s corpus=%s+%s cov=%s ft=%s peak_rss=%sMB\n' \
        "$t" "$status" "$(stat number_of_executed_units)" "$(stat average_exec_per_sec)" \
        "$seeds" "$found" "${cov:-?}" "${ft:-?}" "$(stat peak_rss_mb)"
    if [ "$status" != ok ]; then
        grep -E 'panicked|ERROR|SUMMARY|Test unit written|assertion' "$log" | head -n 20 >&2 || true
        echo "full log: $log" >&2
    elif [ -z "$keep" ]; then
        rm -f "$log"
    fi
    [ -n "$keep" ] || rm -rf "$scratch"
done
exit "$failed"
