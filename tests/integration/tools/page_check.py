#!/usr/bin/env python3
"""Checks the status page's DOM as headless Chromium rendered it (--dump-dom). Usage:
    page_check.py dom.html wan1=offline wan2=online
For each <name>=<state>: the uplink's section shows its name and that state; it holds exactly one
SVG plot with RTT data points (a polyline with at least 2 points, or a point marker). wan1's
plot must shade at least one outage (class "outage"). Exits 1 naming what is missing."""
import re
import sys


def section(dom, name):
    m = re.search(r'<section[^>]*id="uplink-' + re.escape(name) + r'"[^>]*>(.*?)</section>', dom, re.S)
    return m.group(1) if m else None


def main():
    dom = open(sys.argv[1]).read()
    problems = []
    if '<script' in dom:
        problems.append('the page has a script')
    for arg in sys.argv[2:]:
        name, state = arg.split('=', 1)
        body = section(dom, name)
        if body is None:
            problems.append(f'no section for {name}')
            continue
        if name not in body:
            problems.append(f'{name}: its name is not shown')
        if not re.search(r'class="state state-' + re.escape(state) + r'"', body):
            problems.append(f'{name}: state {state} is not shown')
        plots = re.findall(r'<svg[^>]*class="plot"', body)
        if len(plots) != 1:
            problems.append(f'{name}: {len(plots)} plots, expected 1')
        points = sum(len(p.split()) for p in re.findall(r'<polyline[^>]*class="rtt"[^>]*points="([^"]*)"', body))
        points += len(re.findall(r'class="rtt-point"', body))
        if points < 2:
            problems.append(f'{name}: the plot has {points} RTT data points')
        if name == 'wan1' and 'class="outage"' not in body:
            problems.append('wan1: no outage is shaded')
        print(f'{name}: state {state}, 1 plot, {points} RTT points, outages shaded: {body.count(chr(34) + "outage" + chr(34))}')
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
