#!/usr/bin/env python3
"""One peer's field from `uplinkctl wireguard --json` (stdin), for tests/integration/test_wireguard.sh.

    wg_peer.py <device> <field>        the field of the first peer of <device> (lists: one per line;
                                       null: "null"); exit 3 when the device has no peer, 4 when the
                                       field is missing
    wg_peer.py <device> --check-fields the fields the CLI must give, exit 4 naming the missing ones
"""
import json
import sys

REQUIRED = ["device", "peer", "endpoint", "policy", "uplink", "steered_packets", "stale_routes"]


def main():
    device, field = sys.argv[1], sys.argv[2]
    try:
        answer = json.load(sys.stdin)
    except ValueError as e:
        print("bad JSON from uplinkctl wireguard --json: %s" % e, file=sys.stderr)
        return 2
    # The control socket wraps the manager's answer: {"wireguard": {"peers": [...], "problems": [...]}}.
    answer = answer.get("wireguard", answer)
    peers = [p for p in answer.get("peers", []) if p.get("device") == device and p.get("peer")]
    if not peers:
        print("no peer of %s in %s" % (device, json.dumps(answer)), file=sys.stderr)
        return 3
    peer = peers[0]
    if field == "--check-fields":
        missing = [f for f in REQUIRED if f not in peer]
        if missing:
            print("missing fields: %s in %s" % (", ".join(missing), json.dumps(peer)), file=sys.stderr)
            return 4
        return 0
    if field not in peer:
        print("no field %s in %s" % (field, json.dumps(peer)), file=sys.stderr)
        return 4
    value = peer[field]
    if value is None:
        print("null")
    elif isinstance(value, list):
        for item in value:
            print(item)
    elif isinstance(value, bool):
        print("true" if value else "false")
    else:
        print(value)
    return 0


if __name__ == "__main__":
    sys.exit(main())
