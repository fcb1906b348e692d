#!/usr/bin/env bash
# The README's screenshot of the status page and its sample of /metrics, made in the lab:
# `sudo demo/status_page.sh [outdir]` (about 6 minutes once built; outdir defaults to docs/).
#
# uplinkd runs with demo/uplinkd.conf (metrics listener on 127.0.0.1:9107 in the router's
# namespace); where the kernel has netem, the uplinks get some delay and jitter (wan1 8 ms ± 1 ms,
# wan2 25 ms ± 4 ms) so the plots look like real uplinks; after 4 minutes isp1 drops everything upstream for 90 s, and 45 s
# into that outage headless Chromium takes the page at `/?minutes=10` and curl takes `/metrics`.
# shellcheck source-path=SCRIPTDIR
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$(realpath -m "${1:-$ROOT/docs}")
# shellcheck source=../tests/integration/lib.sh disable=SC2034 # lib.sh reads the UL_* settings below
source "$ROOT/tests/integration/lib.sh"
ul_init status_page daemon
command -v chromium >/dev/null || skip "chromium is not installed (scripts/install-deps.sh installs it)"
mkdir -p "$OUT"
P=$UL_PREFIX
BEFORE_S=${STATUS_PAGE_BEFORE_S:-240}
OUTAGE_S=${STATUS_PAGE_OUTAGE_S:-90}

ul_lab_up
# Kernels without sch_netem (this project's CI host) plot the lab's sub-millisecond RTTs instead.
tc -n "$P-rtr" qdisc add dev wan1 root netem delay 8ms 1ms 2>/dev/null &&
  tc -n "$P-rtr" qdisc add dev wan2 root netem delay 25ms 4ms 2>/dev/null ||
  info "no netem in this kernel: the lab's own RTTs are plotted"
start_uplinkd "$P" "$ROOT/demo/uplinkd.conf"
ul_wait_tracking wan1 wan2
info "running ${BEFORE_S} s before the outage"
sleep "$BEFORE_S"
lab_outage "$P" isp1 on || fail "lab_outage isp1 on"
sleep $((OUTAGE_S / 2))
ip netns exec "$P-rtr" timeout 90 chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars \
  --window-size=1100,1380 --screenshot="$OUT/status-page.png" "http://127.0.0.1:9107/?minutes=10" \
  >"$UL_TMP/chromium.log" 2>&1 || fail "chromium: $(tail -3 "$UL_TMP/chromium.log")"
ip netns exec "$P-rtr" curl -sS --max-time 5 http://127.0.0.1:9107/metrics >"$OUT/metrics-sample.txt" ||
  fail "curl /metrics"
sleep $((OUTAGE_S - OUTAGE_S / 2))
lab_outage "$P" isp1 off
info "wrote $OUT/status-page.png and $OUT/metrics-sample.txt"
pass "status page screenshot"
