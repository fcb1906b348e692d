# shellcheck shell=bash
# Helpers of the failover-hygiene tests (test_stale_flows.sh, IPv4, and test_stale_flows_v6.sh):
# tools started in a lab node that print one JSON object per line ({"ev": ..., "t": ns, ...}), the
# events read back from them, conntrack tuples and uplinkctl's flow counters. Source it after
# lib.sh; it reads P (the lab prefix) and UL_TMP.

# bg <name> <node> cmd...: run cmd in the node's namespace, JSON lines to $UL_TMP/<name>.out.
bg() {
  local name=$1 node=$2
  shift 2
  ip netns exec "$P-$node" "$@" </dev/null >"$UL_TMP/$name.out" 2>"$UL_TMP/$name.err" &
  ul_bg_add $!
  eval "PID_$name=$!"
}

# jq_ev <name> <ev> [field] [python condition on d]: the field of the first line with that event.
jq_ev() {
  python3 - "$UL_TMP/$1.out" "$2" "${3:-}" "${4:-True}" <<'PY'
import json, sys
path, ev, field, cond = sys.argv[1:5]
try:
    lines = open(path).read().splitlines()
except OSError:
    sys.exit(1)
for line in lines:
    try:
        d = json.loads(line)
    except ValueError:
        continue
    if d.get("ev") == ev and eval(cond, {}, {"d": d}):
        print(json.dumps(d) if not field else d.get(field))
        sys.exit(0)
sys.exit(1)
PY
}

# wait_ev <name> <ev> <seconds> [condition]: poll until the event is there; prints the line. The
# seconds (tool start-up, a probe's round trip) stretch with UL_TIME_SCALE on slow machines; the
# bounds the test states as results (BOUND_MS) do not.
wait_ev() {
  local f=$UL_TMP/$1.out t_end
  t_end=$(awk -v s="$(ul_scaled "$3")" -v n="$(date +%s%N)" 'BEGIN { printf "%.0f", n + s * 1e9 }')
  while :; do
    # grep first: a python start per poll is slow on a loaded machine.
    if grep -q "\"ev\": \"$2\"" "$f" 2>/dev/null && jq_ev "$1" "$2" "" "${4:-True}"; then return 0; fi
    (($(date +%s%N) < t_end)) || return 1
    sleep 0.05
  done
}

# ms_between <t0 ns> <t1 ns>: t1 - t0 in ms, 1 decimal.
ms_between() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) / 1e6 }'; }

# ct_entry <table> <proto> <src> <sport> <dst> <dport>: the entry of that original tuple.
ct_entry() { awk -v p="$2" -v s="$3" -v sp="$4" -v d="$5" -v dp="$6" '$1 == p && $2 == s && $4 == sp && $3 == d && $5 == dp' <<<"$1"; }

# flow_counter <json> <name>: a counter from `uplinkctl flows --json`, found by key anywhere in it.
flow_counter() {
  python3 -c '
import json, sys
want, d = sys.argv[1], json.loads(sys.argv[2])
def walk(v, path):
    if isinstance(v, dict):
        for k, x in v.items():
            yield from walk(x, path + [k])
    elif not isinstance(v, list):
        yield ".".join(path), v
for p, v in walk(d, []):
    if p == want or p.endswith("." + want):
        print(v)
        sys.exit(0)
sys.exit(1)' "$2" "$1"
}

# stop_bg <name>...: SIGINT to the tools started by bg under those names.
stop_bg() {
  local name pid
  for name in "$@"; do
    pid=PID_$name
    ul_kill "${!pid}" INT
  done
}
