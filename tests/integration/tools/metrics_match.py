#!/usr/bin/env python3
"""Checks a /metrics scrape against `uplinkctl status --json` and `flows --json` taken just before
and just after it: every metric of a fixed set lies between the two snapshots' values of its JSON
field (so it equals both when they agree). Usage:
    metrics_match.py status1.json flows1.json metrics.txt status2.json flows2.json
Prints what it checked; exits 1 naming every mismatch or missing metric."""
import json
import re
import sys

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text):
    out = {}
    for line in text.splitlines():
        if not line or line.startswith('#'):
            continue
        m = SAMPLE.match(line)
        if not m:
            raise SystemExit(f'unparsable line: {line!r}')
        labels = frozenset(LABEL.findall(m.group(3) or ''))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def by_name(items, key='name'):
    return {i[key]: i for i in items}


def checks(status, flows):
    """(metric, labels, value) triples from one snapshot, in the metrics' units."""
    out = []
    for i in status['interfaces']:
        n = i['name']
        il = {'interface': n}
        mw = i.get('mwan3', {})
        out += [
            ('mwan3_interface_score', il, i['score']),
            ('mwan3_interface_enabled', il, 1 if i['enabled'] else 0),
            ('mwan3_interface_running', il, 1 if mw.get('running') else 0),
            ('mwan3_interface_up', il, 1 if mw.get('up') else 0),
            ('mwan3_interface_lost', il, mw.get('lost', 0)),
            ('mwan3_interface_turn', il, mw.get('turn', 0)),
            ('uplinkd_interface_transitions_total', il, i['transitions']),
            ('uplinkd_interface_admin_down', il, 1 if i.get('admin_down') else 0),
            ('uplinkd_interface_rtt_seconds', il, i['rtt_ms'] / 1000.0),
            ('uplinkd_interface_loss_ratio', il, i['loss_pct'] / 100.0),
        ]
        for s in ('online', 'offline', 'connecting', 'disconnecting', 'disabled'):
            out.append(('uplinkd_interface_state', {**il, 'state': s}, 1 if i['state'] == s else 0))
        for s in ('online', 'offline'):
            out.append(('mwan3_interface_status', {**il, 'status': s}, 1 if mw.get('status') == s else 0))
        for t in i['targets']:
            tl = {**il, 'target': t['ip']}
            out += [
                ('uplinkd_probes_sent_total', tl, t['sent']),
                ('uplinkd_probes_replied_total', tl, t['replied']),
                ('uplinkd_probes_lost_total', tl, t['lost']),
                ('uplinkd_target_up', tl, 1 if t['state'] == 'up' else 0),
                ('uplinkd_probe_rtt_seconds_count', tl, t['rtt_histogram']['count']),
            ]
        if 'datapath' in i:
            d = i['datapath']
            out += [
                ('uplinkd_icmp_limiter_packets_total', {**il, 'verdict': 'passed'}, d['icmp_passed']),
                ('uplinkd_icmp_limiter_packets_total', {**il, 'verdict': 'dropped'}, d['icmp_dropped']),
                ('uplinkd_probe_replies_matched_total', il, d['probe_replies']),
            ]
    for u in flows['interfaces']:
        ul = {'interface': u['name']}
        out += [
            ('uplinkd_flows_tracked', ul, u['tracked']),
            ('uplinkd_conntrack_deleted_total', ul, u['conntrack_deleted']),
        ]
    out += [
        ('uplinkd_flows_created_total', {}, flows['created']),
        ('uplinkd_flows_expired_total', {}, flows['expired']),
        ('uplinkd_flows_reclassified_total', {'reason': 'stale'}, flows['reclassified']),
        ('uplinkd_stale_resets_total', {'kind': 'active'}, flows['stale_resets']['active']),
        ('uplinkd_stale_resets_total', {'kind': 'proactive'}, flows['stale_resets']['proactive']),
    ]
    return out


def main():
    s1, f1, m, s2, f2 = sys.argv[1:6]
    load = lambda p: json.load(open(p))
    first = checks(load(s1), load(f1)['flows'])
    second = {(n, frozenset(l.items())): v for n, l, v in checks(load(s2), load(f2)['flows'])}
    metrics = parse(open(m).read())
    problems, steady = [], 0
    for name, labels, v1 in first:
        key = (name, frozenset(labels.items()))
        if key not in metrics:
            problems.append(f'{name}{labels}: not in the scrape')
            continue
        v2 = second.get(key, v1)
        lo, hi = min(v1, v2), max(v1, v2)
        got = metrics[key]
        slack = 1e-9 * max(1.0, abs(hi))
        if not lo - slack <= got <= hi + slack:
            problems.append(f'{name}{labels} = {got}, status --json gave {v1} before and {v2} after')
        steady += v1 == v2
    if problems:
        print('\n'.join(problems))
        return 1
    print(f'{len(first)} values checked, {steady} of them unchanged between the two snapshots (so equal)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
