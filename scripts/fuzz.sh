#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/ (nightly), one after another and niced, then minimizes each
# target's corpus in place. CI never runs this: it replays the committed corpus and regression
# inputs through tests/fuzz_replay.rs.
#
#   scripts/fuzz.sh                   every target, 600 seconds each
#   scripts/fuzz.sh arn_parse         one target, 600 seconds
#   scripts/fuzz.sh all 60            every target, 60 seconds each
#
# A crash leaves its input in fuzz/artifacts/<target>/; once fixed, move it to
# fuzz/regressions/<target>/ so the replay test keeps it fixed.
set -euo pipefail
cd "$(dirname "$0")/.."

target=${1:-all}
seconds=${2:-600}

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

if [ "$target" = all ]; then
  targets=$(cargo +nightly fuzz list)
else
  targets=$target
fi

status=0
for t in $targets; do
  printf '\n==> %s for %ss\n' "$t" "$seconds"
  mkdir -p "fuzz/corpus/$t"
  # One process: the machine has two cores and is shared. A 10 s timeout reports a hang as a
  # crash instead of stalling the run.
  if ! nice -n 10 cargo +nightly fuzz run "$t" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1; then
    echo "$t: crashed; the input is in fuzz/artifacts/$t/" >&2
    status=1
    continue
  fi
  printf '\n==> minimizing fuzz/corpus/%s\n' "$t"
  # Edges only (no hit counts) and a set cover: a corpus of about a hundred files, not a thousand.
  nice -n 10 cargo +nightly fuzz cmin "$t" -- -use_counters=0 -set_cover_merge=1 >/dev/null 2>&1
  echo "$t: $(find "fuzz/corpus/$t" -type f | wc -l) corpus files, $(du -sh "fuzz/corpus/$t" | cut -f1)"
done
exit $status
