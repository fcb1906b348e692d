#!/usr/bin/env python3
"""Server side of the stale-flow test, run inside the lab's core (or router) namespace.

TCP: accepts connections on --tcp-port and echoes what each peer sends (an idle peer gets nothing).
UDP: counts datagrams on --udp-port. Every event is one JSON line on stdout with a CLOCK_REALTIME
stamp in ns, so the test can tell which NAT address (which uplink) a flow arrived from and when:
  {"t": ns, "ev": "listen", ...} {"t": ns, "ev": "accept", "peer": "192.0.2.2", "pport": 40000}
  {"t": ns, "ev": "udp", "peer": "198.51.100.2", "pport": 41000, "seq": 17}
  {"t": ns, "ev": "closed", "peer": ..., "why": "eof" | "ECONNRESET" ...}
The address family is --bind's: `--bind ::` listens on IPv6 only (peers as "2001:db8:1::2").
Stops after --duration seconds (bounded), or on SIGTERM/SIGINT.
"""
import argparse
import errno
import ipaddress
import json
import selectors
import signal
import socket
import sys
import time


def emit(ev, **fields):
    fields = {"t": time.time_ns(), "ev": ev, **fields}
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bind", default="0.0.0.0", help="address to listen on, IPv4 or IPv6 (e.g. ::)")
    ap.add_argument("--tcp-port", type=int, default=0, help="TCP echo port (0: none)")
    ap.add_argument("--udp-port", type=int, default=0, help="UDP sink port (0: none)")
    ap.add_argument("--duration", type=float, default=120.0, help="seconds before exiting")
    a = ap.parse_args()

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))

    try:
        v6 = ipaddress.ip_address(a.bind).version == 6
    except ValueError:  # a host name: IPv4, as before
        v6 = False
    fam = socket.AF_INET6 if v6 else socket.AF_INET

    def sock(kind):
        s = socket.socket(fam, kind)
        if v6:  # IPv6 only: IPv4 peers would otherwise show up as ::ffff:a.b.c.d
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        return s

    sel = selectors.DefaultSelector()
    if a.tcp_port:
        ls = sock(socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((a.bind, a.tcp_port))
        ls.listen(64)
        ls.setblocking(False)
        sel.register(ls, selectors.EVENT_READ, "listen")
    if a.udp_port:
        us = sock(socket.SOCK_DGRAM)
        us.bind((a.bind, a.udp_port))
        us.setblocking(False)
        sel.register(us, selectors.EVENT_READ, "udp")
    emit("listen", tcp=a.tcp_port, udp=a.udp_port, bind=a.bind)

    deadline = time.monotonic() + a.duration
    while not stop and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=min(0.5, max(0.0, deadline - time.monotonic()))):
            s, kind = key.fileobj, key.data
            if kind == "listen":
                try:
                    c, addr = s.accept()
                except OSError:
                    continue
                peer, pport = addr[:2]  # IPv6: (host, port, flowinfo, scope_id)
                c.setblocking(False)
                c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sel.register(c, selectors.EVENT_READ, ("conn", peer, pport))
                emit("accept", peer=peer, pport=pport, local=c.getsockname()[0])
            elif kind == "udp":
                try:
                    data, addr = s.recvfrom(2048)
                except OSError:
                    continue
                peer, pport = addr[:2]
                seq = data.decode(errors="replace").split(" ", 1)[0]
                emit("udp", peer=peer, pport=pport, seq=int(seq) if seq.isdigit() else -1)
            else:
                _, peer, pport = kind
                try:
                    data = s.recv(65536)
                    why = "eof" if not data else None
                except OSError as e:
                    data, why = b"", errno.errorcode.get(e.errno, str(e.errno))
                if why:
                    sel.unregister(s)
                    s.close()
                    emit("closed", peer=peer, pport=pport, why=why)
                    continue
                try:
                    s.send(data)  # echo; a full buffer just loses the echo (the test does not count it)
                except OSError:
                    pass
    emit("exit", reason="signal" if stop else "duration")


if __name__ == "__main__":
    main()
