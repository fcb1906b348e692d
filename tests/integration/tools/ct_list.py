#!/usr/bin/env python3
"""Turn `conntrack -L` output (stdin) into one line per entry that shell can match on:
  <proto> <orig src> <orig dst> <orig sport> <orig dport> <reply dst> <mark hex> <mark & --mask hex>
Ports are "-" for protocols without them. With --mask the last field is the mark under it.
IPv4 and IPv6 entries alike (`conntrack -L -f ipv6`; `-o extended` lines, which start with the
layer-3 protocol, too); --family 4 or 6 keeps only that family's entries.
"""
import argparse
import ipaddress
import re
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mask", type=lambda v: int(v, 0), default=0xFFFFFFFF)
    ap.add_argument("--family", type=int, choices=[4, 6], default=0, help="only IPv4 or IPv6 entries")
    a = ap.parse_args()
    for line in sys.stdin:
        fields = line.split()
        if fields[:1] == ["ipv4"] or fields[:1] == ["ipv6"]:  # -o extended: "ipv6 10 tcp 6 ..."
            fields = fields[2:]
        if len(fields) < 3 or "src=" not in line:
            continue
        kv = [(m.group(1), m.group(2)) for m in re.finditer(r"\b(src|dst|sport|dport|mark)=(\S+)", line)]
        srcs = [v for k, v in kv if k == "src"]
        dsts = [v for k, v in kv if k == "dst"]
        sports = [v for k, v in kv if k == "sport"] + ["-"]
        dports = [v for k, v in kv if k == "dport"] + ["-"]
        marks = [int(v, 0) for k, v in kv if k == "mark"] + [0]
        if len(srcs) < 2 or len(dsts) < 2:
            continue
        if a.family:
            try:
                if ipaddress.ip_address(srcs[0]).version != a.family:
                    continue
            except ValueError:
                continue
        mark = marks[0]
        print(fields[0], srcs[0], dsts[0], sports[0], dports[0], dsts[1], "0x%x" % mark, "0x%x" % (mark & a.mask))


if __name__ == "__main__":
    main()
