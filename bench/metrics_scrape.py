#!/usr/bin/env python3
"""Helper of `bench/daemon_load.sh --metrics` (not meant to be run alone).

  scrape  runs in the router namespace for one phase: every second a GET of /metrics, every 5 s a
          GET of / (a browser with the page open refreshes every 5 s) and, in every phase, with or
          without the listener, an `uplinkctl status --json`, so that the only difference between
          the two configurations is the listener and its scrapes. One JSON line per request.
  phase   prints one phase's CPU and memory figures and appends them to the record file.
  report  the figures over all phases: per phase, the medians per configuration, the scrapes, and
          a summary line for the README.

Latencies: curl's time_total (connect to last byte, without curl's own start-up) for HTTP, and the
wall time of the whole uplinkctl process for status --json (there is no finer clock to read there);
curl's process wall time is reported too, so the two can be compared like for like.
"""
import argparse
import json
import math
import re
import statistics
import subprocess
import sys
import time

CURL_MAX_TIME_S = 5
PROCESS_TIMEOUT_S = 10  # a hung client must not stretch the phase without bound


def curl(url, body_to):
    """One GET; returns (record fields), never raises for a failed request."""
    start = time.monotonic()
    try:
        p = subprocess.run(["curl", "-sS", "--max-time", str(CURL_MAX_TIME_S), "-o", body_to, "-w",
                            "%{http_code} %{size_download} %{time_total}", url],
                           capture_output=True, text=True, timeout=PROCESS_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": "timeout", "wall_s": time.monotonic() - start}
    wall = time.monotonic() - start
    fields = p.stdout.split()
    code = int(fields[0]) if fields else 0
    rec = {"ok": p.returncode == 0 and code == 200, "code": code, "wall_s": wall}
    if len(fields) == 3:
        rec["size"] = int(fields[1])
        rec["time_s"] = float(fields[2])
    if p.returncode != 0:
        rec["error"] = f"curl exit {p.returncode}: {p.stderr.strip()}"
    return rec


def status(uplinkctl, sock):
    start = time.monotonic()
    try:
        p = subprocess.run([uplinkctl, "--socket", sock, "status", "--json"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=PROCESS_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": "timeout", "wall_s": time.monotonic() - start}
    wall = time.monotonic() - start
    rec = {"ok": p.returncode == 0, "size": len(p.stdout), "wall_s": wall}
    if p.returncode != 0:
        rec["error"] = f"uplinkctl exit {p.returncode}: {p.stderr.decode(errors='replace').strip()}"
    return rec


def cmd_scrape(a):
    t0 = time.monotonic()
    with open(a.out, "w", encoding="utf-8") as out:
        # One tick a second, on an absolute schedule; a tick more than a second late is skipped
        # (and counted) rather than run in a burst. At most `seconds` ticks.
        for i in range(a.seconds):
            delay = t0 + i - time.monotonic()
            if delay < -1:
                out.write(json.dumps({"kind": "skipped", "tick": i}) + "\n")
                continue
            if delay > 0:
                time.sleep(delay)
            if a.url:
                out.write(json.dumps({"kind": "metrics", "tick": i, **curl(a.url + "/metrics", "/dev/null")}) + "\n")
                if i % 5 == 0:
                    out.write(json.dumps({"kind": "page", "tick": i, **curl(a.url + "/", a.page)}) + "\n")
            if i % 5 == 2:  # away from the page's ticks
                out.write(json.dumps({"kind": "status", "tick": i, **status(a.uplinkctl, a.socket)}) + "\n")
            out.flush()


def cmd_phase(a):
    wall = a.t1 - a.t0
    cpu = (a.ticks / a.hz) / wall * 100
    with open(a.status, encoding="utf-8") as f:
        st = json.load(f)
    sent = sum(i["probes"]["sent"] for i in st["interfaces"])
    replied = sum(i["probes"]["replied"] for i in st["interfaces"])
    states = ", ".join(f"{i['name']} {i['state']}" for i in st["interfaces"])
    listening = st["daemon"]["metrics_listener"]["listening"]
    rec = {"n": a.n, "config": a.config, "wall_s": wall, "cpu_pct": cpu, "rss_kb": a.rss_kb,
           "hwm_kb": a.hwm_kb, "sent": sent, "replied": replied, "listening": listening,
           "pid": a.pid, "status_pid": st["daemon"]["pid"]}
    with open(a.record, "a", encoding="utf-8") as f:
        f.write(json.dumps(rec) + "\n")
    print(f"phase {a.n} {a.config:3}: {wall:.1f} s, CPU {cpu:.2f} % of one core, VmRSS {a.rss_kb / 1024:.1f} MiB, "
          f"VmHWM {a.hwm_kb / 1024:.1f} MiB, probes sent {sent}, replied {replied} "
          f"(since start), listening {listening or 'nowhere'}; {states}", flush=True)
    if st["daemon"]["pid"] != a.pid:
        print(f"  ODD: pgrep found pid {a.pid}, the daemon says {st['daemon']['pid']}", flush=True)


def pct(values, p):
    """Nearest rank: the smallest value with at least p % of the values at or below it."""
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def ms(seconds):
    return f"{seconds * 1000:.1f}"


def read_lines(paths):
    recs = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            recs += [json.loads(line) for line in f if line.strip()]
    return recs


# The page's RTT lines: one polyline per run of answered cycles of a target (a single point is a
# circle). The page merges points that would print alike, so this counts what is drawn, which is at
# most the cycles in the ring.
POLYLINE = re.compile(r'<polyline class="rtt"[^>]*? points="([^"]*)"')
POINT = re.compile(r'<circle class="rtt-point"')


def page_points(path):
    try:
        with open(path, encoding="utf-8") as f:
            html = f.read()
    except OSError:
        return None
    lines = POLYLINE.findall(html)
    return {"lines": len(lines), "coords": sum(len(p.split()) for p in lines) + len(POINT.findall(html))}


def http_summary(label, recs):
    ok = [r for r in recs if r["ok"]]
    failed = [r for r in recs if not r["ok"]]
    if not ok:
        print(f"{label}: {len(recs)} requests, all failed")
        return None
    sizes = [r["size"] for r in ok]
    times = [r["time_s"] for r in ok]
    walls = [r["wall_s"] for r in ok]
    fig = {"size": statistics.median(sizes), "median": statistics.median(times), "p95": pct(times, 95),
           "max": max(times), "n": len(recs), "failed": len(failed)}
    print(f"{label}: {len(recs)} requests, {len(failed)} failed; size median {fig['size']:.0f} bytes "
          f"(min {min(sizes)}, max {max(sizes)}); time_total median {ms(fig['median'])} ms, "
          f"p95 {ms(fig['p95'])}, max {ms(fig['max'])}; curl process wall median {ms(statistics.median(walls))} ms")
    for r in failed[:5]:
        print(f"  failed at tick {r.get('tick')}: code {r.get('code')}, {r.get('error', '')}")
    return fig


def cmd_report(a):
    phases = read_lines([a.record])
    by = {c: [p for p in phases if p["config"] == c] for c in ("off", "on")}
    if not by["off"] or not by["on"]:
        sys.exit("report: a configuration has no phase")
    med = {c: {k: statistics.median(p[k] for p in by[c]) for k in ("cpu_pct", "rss_kb", "hwm_kb")} for c in by}
    ratio = med["on"]["cpu_pct"] / med["off"]["cpu_pct"] if med["off"]["cpu_pct"] > 0 else float("nan")
    d_rss = (med["on"]["rss_kb"] - med["off"]["rss_kb"]) / 1024
    print()
    for c in ("off", "on"):
        cpus = ", ".join(f"{p['cpu_pct']:.2f}" for p in by[c])
        rsss = ", ".join(f"{p['rss_kb'] / 1024:.1f}" for p in by[c])
        print(f"{c:3}: CPU {cpus} % -> median {med[c]['cpu_pct']:.2f} %; VmRSS {rsss} MiB -> median "
              f"{med[c]['rss_kb'] / 1024:.1f} MiB; VmHWM median {med[c]['hwm_kb'] / 1024:.1f} MiB")
    print(f"on/off: CPU {ratio:.2f}x, VmRSS {d_rss:+.1f} MiB, "
          f"VmHWM {(med['on']['hwm_kb'] - med['off']['hwm_kb']) / 1024:+.1f} MiB")
    for p in phases:
        if p["config"] == "on" and not p["listening"]:
            print(f"  ODD: phase {p['n']} is 'on' but the daemon listens nowhere")
        if p["config"] == "off" and p["listening"]:
            print(f"  ODD: phase {p['n']} is 'off' but the daemon listens on {p['listening']}")

    on_scrapes = read_lines(a.scrapes_on)
    off_scrapes = read_lines(a.scrapes_off)
    skipped = [r for r in on_scrapes + off_scrapes if r["kind"] == "skipped"]
    if skipped:
        print(f"  ODD: {len(skipped)} scraper ticks skipped (more than 1 s late)")
    m = http_summary("/metrics", [r for r in on_scrapes if r["kind"] == "metrics"])
    g = http_summary("/", [r for r in on_scrapes if r["kind"] == "page"])
    # The page plots the last hour, but its ring holds only what this daemon recorded since it
    # started: one point per cycle (interval) per uplink, so the warm-up and the phase up to the
    # last page's tick.
    last_ticks = [r["tick"] for r in on_scrapes if r["kind"] == "page" and r["ok"]]
    history_s = a.warmup + (max(last_ticks) if last_ticks else a.phase_seconds)
    cycles = history_s / a.interval
    # The page grows with its history: its size by tick (the history it had), and the last one's.
    by_tick = {}
    for r in on_scrapes:
        if r["kind"] == "page" and r["ok"]:
            by_tick.setdefault(r["tick"], []).append(r["size"])
    page_size = statistics.median(by_tick[max(by_tick)]) if by_tick else None
    if by_tick:
        print("/ size by history (warm-up + tick): " + ", ".join(
            f"{a.warmup + t:.0f} s {statistics.median(v):.0f}" for t, v in sorted(by_tick.items())) + " bytes")
    pts = [page_points(p) for p in a.pages]
    pts = [p for p in pts if p]
    if pts:
        last = pts[-1]
        print(f"/ history: a page shows only its daemon's life, here up to {history_s:.0f} s of the 1 h plot "
              f"(about {cycles:.0f} cycles per uplink at {a.interval} s; the ring holds up to 3600); the last "
              f"page drew {last['coords']} RTT coordinates in {last['lines']} lines, "
              f"{last['coords'] / max(1, last['lines']):.0f} per uplink and target (points that print alike merge)")
    st = {}
    for label, recs in (("on", on_scrapes), ("off", off_scrapes)):
        ok = [r["wall_s"] for r in recs if r["kind"] == "status" and r["ok"]]
        bad = [r for r in recs if r["kind"] == "status" and not r["ok"]]
        if ok:
            st[label] = statistics.median(ok)
            print(f"status --json in the '{label}' phases (uplinkctl process wall time): {len(ok) + len(bad)} calls, "
                  f"{len(bad)} failed; median {ms(st[label])} ms, p95 {ms(pct(ok, 95))}, max {ms(max(ok))}")
        for r in bad[:5]:
            print(f"  failed at tick {r.get('tick')}: {r.get('error', '')}")

    def kb(n):
        return f"{n / 1000:.0f} KB"
    parts = [f"metrics listener, 4 uplinks x 4 targets, interval {a.interval} s, phases "
             f"{'/'.join(p['config'] for p in phases)} of {a.phase_seconds} s: "
             f"CPU off {med['off']['cpu_pct']:.2f} %, on {med['on']['cpu_pct']:.2f} % ({ratio:.2f}x); "
             f"VmRSS off {med['off']['rss_kb'] / 1024:.1f} MiB, on {med['on']['rss_kb'] / 1024:.1f} MiB "
             f"({d_rss:+.1f} MiB)"]
    if m:
        parts.append(f"/metrics {kb(m['size'])}, scrape median {ms(m['median'])} ms (p95 {ms(m['p95'])}, "
                     f"max {ms(m['max'])})")
    if g:
        parts.append(f"/ {kb(page_size)} with {history_s:.0f} s of history (not 1 h), median {ms(g['median'])} ms "
                     f"(p95 {ms(g['p95'])}, max {ms(g['max'])})")
    if "on" in st:
        curl_wall = statistics.median(r["wall_s"] for r in on_scrapes if r["kind"] == "metrics" and r["ok"]) if m else None
        parts.append(f"status --json median {ms(st['on'])} ms (whole uplinkctl process"
                     + (f"; a whole curl of /metrics: {ms(curl_wall)} ms)" if curl_wall else ")"))
    print()
    print("summary:")
    print("; ".join(parts))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("scrape")
    s.add_argument("--seconds", type=int, required=True)
    s.add_argument("--url", default="", help="http://host:port of the listener; empty: status only")
    s.add_argument("--page", default="/dev/null", help="where the last page is kept")
    s.add_argument("--uplinkctl", required=True)
    s.add_argument("--socket", required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_scrape)
    p = sub.add_parser("phase")
    for name in ("n", "pid", "ticks", "hz", "rss_kb", "hwm_kb"):
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, required=True)
    for name in ("t0", "t1"):
        p.add_argument(f"--{name}", type=float, required=True)
    p.add_argument("--config", choices=("off", "on"), required=True)
    p.add_argument("--status", required=True, help="status --json at the end of the phase")
    p.add_argument("--record", required=True)
    p.set_defaults(fn=cmd_phase)
    r = sub.add_parser("report")
    r.add_argument("--record", required=True)
    r.add_argument("--scrapes-on", nargs="+", required=True)
    r.add_argument("--scrapes-off", nargs="+", required=True)
    r.add_argument("--pages", nargs="*", default=[])
    r.add_argument("--phase-seconds", type=int, required=True)
    r.add_argument("--warmup", type=float, required=True)
    r.add_argument("--interval", type=float, required=True)
    r.set_defaults(fn=cmd_report)
    a = ap.parse_args()
    a.fn(a)


if __name__ == "__main__":
    main()
