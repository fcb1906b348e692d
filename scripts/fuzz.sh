#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/<name>_fuzz.cpp) with clang, ASan and UBSan into
# build-fuzz/ (no BPF object is built) and runs each one for a while on a copy of its seed corpus
# (tests/fuzz/corpus/<name>/, so the repository is not written), with its dictionary
# (tests/fuzz/<name>.dict) when it has one. Prints one summary line per target; exits 1 when a
# target crashed, hung, ran out of memory or tripped a sanitizer, with the path of the input that
# did it (kept under build-fuzz/fuzz-artifacts/<name>/; reproduce with `build-fuzz/<name>_fuzz <file>`).
#
#   scripts/fuzz.sh [seconds-per-target] [target ...]    (default 30 s; every *_fuzz target)
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-30}
shift || true
if ! [[ $seconds =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
  echo "fuzz.sh: seconds per target must be a positive whole number, not '$seconds'" >&2
  exit 2
fi

build="build-fuzz"
CC=clang CXX=clang++ cmake -S . -B "$build" -DUPLINKD_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$build" --target fuzz_targets -j"${UPLINKD_FUZZ_JOBS:-$(nproc)}" >/dev/null

targets=()
if (($#)); then
  for t in "$@"; do targets+=("$build/${t%_fuzz}_fuzz"); done
else
  for bin in "$build"/*_fuzz; do
    [ -x "$bin" ] && targets+=("$bin")
  done
fi
if ((${#targets[@]} == 0)); then
  echo "fuzz.sh: no *_fuzz target in $build (tests/fuzz/*_fuzz.cpp)" >&2
  exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# A UBSan report aborts like an ASan one (the targets are also built with -fno-sanitize-recover).
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

status=0
for bin in "${targets[@]}"; do
  target=$(basename "$bin")
  name=${target%_fuzz}
  if [ ! -x "$bin" ]; then
    echo "fuzz.sh: $target: no such target (tests/fuzz/${name}_fuzz.cpp)" >&2
    status=1
    continue
  fi
  corpus=$work/$name
  artifacts=$build/fuzz-artifacts/$name
  log=$build/fuzz-logs/$name.log
  mkdir -p "$corpus" "$artifacts" "$(dirname "$log")"
  seeds=tests/fuzz/corpus/$name
  [ -d "$seeds" ] && cp -r "$seeds"/. "$corpus"/
  seed_count=$(find "$corpus" -type f | wc -l)

  dict=()
  [ -f "tests/fuzz/$name.dict" ] && dict=(-dict="tests/fuzz/$name.dict")

  run_status=0
  "$bin" "$corpus" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix="$artifacts/" "${dict[@]}" >"$log" 2>&1 || run_status=$?

  # The last status line (#N ... cov: E ft: F corp: U/S ...) and the final stats.
  last=$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  execs=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corpus_count=$(find "$corpus" -type f | wc -l)
  summary="runs ${runs:-?}, ${execs:-?} exec/s, coverage ${cov:-?} edges (${ft:-?} features), corpus $seed_count -> $corpus_count inputs"
  if [ "$run_status" -eq 0 ]; then
    printf 'fuzz %-22s ok      %ss: %s\n' "$target" "$seconds" "$summary"
  else
    status=1
    crash=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
    printf 'fuzz %-22s FAILED  exit %s: %s\n' "$target" "$run_status" "$summary"
    # What went wrong: the sanitizer's or libFuzzer's first report line, and an exception's what().
    grep -E 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:|terminate called|what\(\):' "$log" |
      head -n 3 | sed 's/^/    /' || true
    echo "    input: ${crash:-(none written)}; log: $log"
    echo "    reproduce: $bin ${crash:-<input>}"
  fi
done
exit "$status"
