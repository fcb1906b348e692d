#!/usr/bin/env bash
# The metrics listener (`option metrics_listen`): /metrics read by a real Prometheus through a
# failover, checked by promtool and against `uplinkctl status --json`, the status page loaded by a
# real headless Chromium during and after the outage, and clients that misbehave.
# Config: interval 1, timeout 1, down 3, up 3 (test_outage_detection's); the listener on
# 127.0.0.1:9107 and [::1]:9107 in the router's namespace; Prometheus scrapes every second.
#   - answers: GET and HEAD (no body) 200, POST 405 with Allow, an unknown path 404, both addresses;
#   - `promtool check metrics` passes on a scrape;
#   - every metric of a fixed set equals the matching field of `status --json` taken just before
#     and just after the scrape (counters lie between the two, other values equal both);
#   - a client that sends nothing is closed within the idle timeout (5 s) + 2 s; a 64 KiB header is
#     answered 431 or closed within 2 s; 24 idle connections at once from one address; meanwhile
#     no probe leaves more than 250 ms late (the send-lateness histogram over that window) and every
#     scrape from another address is answered;
#   - Chromium during the outage: both uplinks' names and states, one plot per uplink with data
#     points, wan1's outage shaded; after the recovery: wan1 online, the outage still shaded;
#   - Prometheus afterwards: mwan3_interface_status{interface="wan1",status="offline"} was 1 and is
#     0 now, the probe counters increased, and the recorded detection time is within
#     (down x interval + timeout) x 1.2;
#   - bad input: a port in use (reload onto Prometheus's) leaves the daemon tracking and says why in
#     status; a bad address is refused by reload naming file:line and option; the good one back
#     listens again; after an in-place restart the listener answers again.
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ul_init metrics daemon

for tool in curl prometheus promtool chromium python3; do
  command -v "$tool" >/dev/null || skip "$tool is not installed (scripts/install-deps.sh installs it)"
done

P=$UL_PREFIX
INTERVAL=1 TIMEOUT=1 DOWN=3 UP=3
DETECT_MAX=$(fcalc "($DOWN * $INTERVAL + $TIMEOUT) * 1.2")
PORT=9107
BASE=http://127.0.0.1:$PORT
ARTIFACTS=${UPLINKD_ARTIFACTS:-$UL_BUILD/artifacts}
mkdir -p "$ARTIFACTS"

ul_lab_up
CFG=$UL_TMP/uplinkd.conf
ul_write_config "$CFG" "$INTERVAL" "$TIMEOUT" "$DOWN" "$UP"
sed -i "/option mmx_mask/a\\	option metrics_listen '127.0.0.1:$PORT [::1]:$PORT'" "$CFG"

# Everything HTTP runs in the router's namespace, where the listener is.
in_rtr() { ip netns exec "$P-rtr" "$@"; }
http() { in_rtr curl -sS --max-time 10 "$@"; }

start_uplinkd "$P" "$CFG"
ul_wait_tracking wan1 wan2
sleep 2

# ---- answers ---------------------------------------------------------------------------------
code=$(http -o "$UL_TMP/m1" -w '%{http_code} %{content_type}' "$BASE/metrics") || fail "GET /metrics failed"
[[ $code == "200 text/plain; version=0.0.4; charset=utf-8" ]] || fail "GET /metrics: '$code'"
grep -q '^mwan3_interface_status{interface="wan1",status="online"} 1$' "$UL_TMP/m1" ||
  fail "GET /metrics has no mwan3_interface_status of wan1 online = 1: $(grep -c . "$UL_TMP/m1") lines"
pass "GET /metrics: 200, Prometheus text format, wan1 online ($(wc -c <"$UL_TMP/m1") bytes)"
head_out=$(http -I "$BASE/metrics") || fail "HEAD /metrics failed"
grep -qi '^content-length: [1-9]' <<<"$head_out" || fail "HEAD /metrics has no Content-Length: $head_out"
body=$(http -X HEAD --max-time 3 -o - "$BASE/metrics" 2>/dev/null || true)
[[ -z $body ]] || fail "HEAD /metrics sent a body (${#body} bytes)"
pass "HEAD /metrics: headers with a length, no body"
code=$(http -o /dev/null -D "$UL_TMP/post.h" -w '%{http_code}' -X POST --data x=1 "$BASE/metrics")
if [[ $code != 405 ]] || ! grep -qi '^allow: GET, HEAD' "$UL_TMP/post.h"; then
  fail "POST /metrics: $code, $(cat "$UL_TMP/post.h")"
fi
code=$(http -o /dev/null -w '%{http_code}' "$BASE/nothing-here")
[[ $code == 404 ]] || fail "GET /nothing-here: $code (expected 404)"
pass "POST: 405 with Allow: GET, HEAD; an unknown path: 404"
code=$(http -o /dev/null -w '%{http_code}' "http://[::1]:$PORT/metrics")
[[ $code == 200 ]] || fail "GET http://[::1]:$PORT/metrics: $code"
code=$(http -o "$UL_TMP/page0.html" -w '%{http_code} %{content_type}' "$BASE/")
[[ $code == "200 text/html; charset=utf-8" ]] || fail "GET /: '$code'"
pass "IPv6 listener answers; GET / is HTML"
code=$(http -o "$UL_TMP/page10.html" -w '%{http_code}' "$BASE/?minutes=10")
if [[ $code != 200 ]] || ! grep -q '<strong>10 min</strong>' "$UL_TMP/page10.html"; then
  fail "GET /?minutes=10: $code"
fi
code=$(http -o /dev/null -w '%{http_code}' "$BASE/?minutes=3")
[[ $code == 400 ]] || fail "GET /?minutes=3: $code (expected 400)"
pass "the page's zoom: ?minutes=10 shows 10 min; ?minutes=3 is refused with 400"
ctl status | grep -q "^ http://127.0.0.1:$PORT/ (status page) and /metrics" ||
  fail "uplinkctl status does not show the listener: $(ctl status | tail -5)"
pass "uplinkctl status shows where the listener is"
listening=$(ctl_json | python3 -c 'import json,sys; print(" ".join(json.load(sys.stdin)["daemon"]["metrics_listener"]["listening"]))')
[[ $listening == "127.0.0.1:$PORT [::1]:$PORT" ]] || fail "status --json lists the listener as '$listening'"
pass "status --json lists both listening addresses"

# ---- promtool --------------------------------------------------------------------------------
promtool check metrics <"$UL_TMP/m1" >"$UL_TMP/promtool.out" 2>&1 ||
  fail "promtool check metrics: $(cat "$UL_TMP/promtool.out")"
pass "promtool check metrics passes ($(grep -c '^# TYPE' "$UL_TMP/m1") families)"

# ---- the same numbers as status --json -----------------------------------------------------
compare_once() {
  ctl status --json >"$UL_TMP/s1.json" && ctl flows --json >"$UL_TMP/f1.json" &&
    http -o "$UL_TMP/m.txt" "$BASE/metrics" &&
    ctl status --json >"$UL_TMP/s2.json" && ctl flows --json >"$UL_TMP/f2.json" &&
    python3 "$UL_SOURCE/tests/integration/tools/metrics_match.py" "$UL_TMP/s1.json" "$UL_TMP/f1.json" \
      "$UL_TMP/m.txt" "$UL_TMP/s2.json" "$UL_TMP/f2.json"
}
out=$(compare_once) || fail "metrics differ from status --json: $out"
info "$out"
pass "every metric of the fixed set equals status --json at the same moment"

# ---- Prometheus ------------------------------------------------------------------------------
PROM=127.0.0.1:9090
mkdir -p "$UL_TMP/prom"
cat >"$UL_TMP/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: uplinkd
    static_configs:
      - targets: ['127.0.0.1:$PORT']
EOF
in_rtr prometheus --config.file="$UL_TMP/prometheus.yml" --storage.tsdb.path="$UL_TMP/prom" \
  --web.listen-address=$PROM --log.level=warn >"$UL_TMP/prometheus.log" 2>&1 &
ul_bg_add $!
PROM_PID=$!
ready=0
for _ in $(seq 1 60); do
  if http -o /dev/null "http://$PROM/-/ready" 2>/dev/null; then ready=1 && break; fi
  sleep 0.5
done
((ready)) || fail "Prometheus not ready within 30 s: $(tail -5 "$UL_TMP/prometheus.log")"
pass "Prometheus $(prometheus --version 2>&1 | awk 'NR==1 {print $3}') scraping every second (pid $PROM_PID)"
prom_query() { # <promql>: the first result's value, or "none"
  http -G "http://$PROM/api/v1/query" --data-urlencode "query=$1" |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "none")'
}
up=none
for _ in $(seq 1 20); do
  up=$(prom_query 'up{job="uplinkd"}')
  [[ $up == 1 ]] && break
  sleep 0.5
done
[[ $up == 1 ]] || fail "Prometheus's up{job=\"uplinkd\"} is '$up' after 10 s"
sent0=$(prom_query 'sum(uplinkd_probes_sent_total{interface="wan1"})')
pass "Prometheus scrapes uplinkd (up = 1; wan1 probes sent so far: $sent0)"

# ---- clients that misbehave, while Prometheus scrapes ---------------------------------------
late_over() { # <status json> <interface>: probes that left more than 250 ms late
  python3 -c '
import json,sys
s=json.load(open(sys.argv[1]))
i=[x for x in s["interfaces"] if x["name"]==sys.argv[2]][0]["probe_lateness"]
print(sum(c for le,c in zip(i["le_ms"]+[float("inf")], i["counts"]) if le > 250))' "$1" "$2"
}
ctl status --json >"$UL_TMP/late0.json"
in_rtr python3 "$UL_SOURCE/tests/integration/tools/slow_clients.py" 127.0.0.1 "$PORT" >"$UL_TMP/slow.out" 2>&1 &
SLOW_PID=$!
ul_bg_add $SLOW_PID
scrapes_ok=0
for _ in $(seq 1 8); do
  http -o /dev/null --max-time 3 "$BASE/metrics" && scrapes_ok=$((scrapes_ok + 1))
  sleep 1
done
wait "$SLOW_PID" || fail "misbehaving clients: $(cat "$UL_TMP/slow.out")"
while read -r l; do info "$l"; done <"$UL_TMP/slow.out"
ctl status --json >"$UL_TMP/late1.json"
for i in wan1 wan2; do
  late=$(($(late_over "$UL_TMP/late1.json" $i) - $(late_over "$UL_TMP/late0.json" $i)))
  ((late == 0)) || fail "$late probe(s) of $i left more than 250 ms late while clients misbehaved"
done
((scrapes_ok == 8)) || fail "only $scrapes_ok of 8 scrapes (from another address) answered while clients misbehaved"
pass "misbehaving clients closed within bounds; no probe left > 250 ms late; $scrapes_ok/8 scrapes answered"

# ---- the outage, and the page ---------------------------------------------------------------
shot() { # <name>: screenshot and DOM of the page, in the router's namespace
  local png=$ARTIFACTS/status-page-$1.png
  in_rtr timeout 90 chromium --headless=new --no-sandbox --disable-gpu --hide-scrollbars \
    --window-size=1280,1500 --screenshot="$png" "$BASE/" >"$UL_TMP/chromium-$1.log" 2>&1 ||
    fail "chromium --screenshot failed: $(tail -3 "$UL_TMP/chromium-$1.log")"
  in_rtr timeout 90 chromium --headless=new --no-sandbox --disable-gpu --dump-dom "$BASE/" \
    >"$UL_TMP/dom-$1.html" 2>>"$UL_TMP/chromium-$1.log" || fail "chromium --dump-dom failed"
  info "screenshot: $png"
}
check_page() { # <name> <wan1 state>
  python3 "$UL_SOURCE/tests/integration/tools/page_check.py" "$UL_TMP/dom-$1.html" "wan1=$2" "wan2=online" ||
    fail "the page ($1) is not as expected (DOM kept in $UL_TMP/dom-$1.html)"
}

h0=$(ctl_json | python3 -c 'import json,sys; print([i for i in json.load(sys.stdin)["interfaces"] if i["name"]=="wan1"][0]["transitions"])')
log "outage of isp1"
lab_outage "$P" isp1 on || fail "lab_outage isp1 on failed"
wait_iface_state wan1 offline 20 || fail "wan1 is '$UL_LAST_STATE' 20 s into the outage"
sleep 3  # a few offline points in the history and in Prometheus
shot outage
check_page outage offline
pass "the page during the outage: names, states, one plot per uplink with points, wan1's outage shaded"

log "isp1 back"
lab_outage "$P" isp1 off || fail "lab_outage isp1 off failed"
wait_iface_state wan1 online 20 || fail "wan1 is '$UL_LAST_STATE' 20 s after the recovery"
sleep 3
shot after
check_page after online
pass "the page after the recovery: wan1 online, its outage still shaded"

# ---- what Prometheus recorded ---------------------------------------------------------------
was=$(prom_query 'max_over_time(mwan3_interface_status{interface="wan1",status="offline"}[10m])')
now_v=$(prom_query 'mwan3_interface_status{interface="wan1",status="offline"}')
[[ $was == 1 && $now_v == 0 ]] || fail "mwan3_interface_status{wan1,offline}: max over the run $was, now $now_v (expected 1, 0)"
pass "Prometheus: mwan3_interface_status{interface=\"wan1\",status=\"offline\"} went to 1 and back to 0"
sent1=$(prom_query 'sum(uplinkd_probes_sent_total{interface="wan1"})')
fle "$sent1" "$sent0" && fail "wan1's probe counters did not increase in Prometheus ($sent0 -> $sent1)"
lost=$(prom_query 'sum(increase(uplinkd_probes_lost_total{interface="wan1"}[10m]))')
pass "Prometheus: wan1 probes sent $sent0 -> $sent1, lost increased by $lost"
detect=$(prom_query 'uplinkd_outage_detection_seconds{interface="wan1"}')
[[ $detect != none ]] || fail "Prometheus has no uplinkd_outage_detection_seconds for wan1"
fle "$detect" "$DETECT_MAX" || fail "recorded detection time $detect s is above (down x interval + timeout) x 1.2 = $DETECT_MAX s"
pass "Prometheus: detection time recorded $detect s <= $DETECT_MAX s"
h1=$(ctl_json | python3 -c 'import json,sys; print([i for i in json.load(sys.stdin)["interfaces"] if i["name"]=="wan1"][0]["transitions"])')
trans=$(prom_query 'uplinkd_interface_transitions_total{interface="wan1"}')
[[ $trans == "$h1" ]] || fail "Prometheus's last transitions of wan1 ($trans) differ from status --json ($h1; $h0 before the outage)"
pass "Prometheus's transitions of wan1 = status --json ($h0 -> $h1)"

# ---- bad input: a port in use, a bad address ------------------------------------------------
listener() { ctl_json | python3 -c 'import json,sys; l=json.load(sys.stdin)["daemon"]["metrics_listener"]; print(" ".join(l["listening"]), "|", " ; ".join(l["errors"]))'; }
cp "$CFG" "$UL_TMP/good.conf"
sed -i "s|option metrics_listen .*|option metrics_listen '127.0.0.1:9090'|" "$CFG"
out=$(ctl reload 2>&1) || fail "reload onto a port in use was refused: $out"
l=$(listener)
[[ $l == " | metrics listener 127.0.0.1:9090: bind: Address already in use ("* ]] ||
  fail "a port in use (Prometheus's 9090): listener state '$l'"
uplinkd_alive || fail "uplinkd died when its listener could not bind"
[[ $(iface_get wan1 state) == online ]] || fail "wan1 is not online after the listener failed"
ctl status | grep -q "^ not listening: metrics listener 127.0.0.1:9090: bind: Address already in use" ||
  fail "uplinkctl status does not say why it is not listening"
pass "a port in use: the daemon goes on tracking; status names the address, the errno and the fix"
sed -i "s|option metrics_listen .*|option metrics_listen 'localhost:9107'|" "$CFG"
out=$(ctl reload 2>&1) && fail "reload accepted metrics_listen 'localhost:9107': $out"
[[ $out == *"$CFG:4"*"metrics_listen"*"'localhost:9107'"* ]] || fail "the refusal does not name file:line, option and word: $out"
[[ $(listener) == "$l" ]] || fail "a refused reload changed the listener: $(listener)"
pass "a bad address: reload refused naming $CFG:4 and the option; the running listener state kept"
cp "$UL_TMP/good.conf" "$CFG"
out=$(ctl reload 2>&1) || fail "reload back to the good config failed: $out"
[[ $(listener) == "127.0.0.1:$PORT [::1]:$PORT | " ]] || fail "after the fix: $(listener)"
http -o /dev/null "$BASE/metrics" || fail "no scrape after the listener came back"
pass "the good address back by reload: both listeners answer again"

# ---- an in-place restart binds again ---------------------------------------------------------
out=$(ctl restart) || fail "uplinkctl restart failed: $out"
wait_uplinkd_ready 15 || fail "no answer on the control socket after the restart"
code=000
for _ in $(seq 1 20); do
  code=$(http -o /dev/null -w '%{http_code}' "$BASE/metrics" 2>/dev/null) && [[ $code == 200 ]] && break
  sleep 0.25
done
[[ $code == 200 ]] || fail "no /metrics within 5 s of the in-place restart ($code)"
pass "after an in-place restart the listener answers again"

cp "$UL_TMP/m.txt" "$ARTIFACTS/metrics-sample.txt"
kill "$PROM_PID" 2>/dev/null && wait "$PROM_PID" 2>/dev/null
log "artefacts: $ARTIFACTS/status-page-outage.png $ARTIFACTS/status-page-after.png $ARTIFACTS/metrics-sample.txt"
stop_uplinkd
pass "test_metrics"
