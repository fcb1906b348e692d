#!/usr/bin/env python3
"""Send one crafted TCP segment from a LAN host and report any TCP answer to it.

Run inside the LAN namespace as root. The segment leaves by an AF_PACKET socket, so no local
socket owns the tuple: the router's datapath sees a mid-stream segment of a flow only it knows,
and whatever comes back for that tuple within --wait seconds is reported exactly as received
(flags, seq, ack, window, TTL, both checksums verified here), one JSON line each:
  {"ev": "sent", "t": ns, "seq": S, "ack": A, ...}
  {"ev": "reply", "t": ns, "after_ms": x, "flags": "R", "seq": ..., "ip_csum_ok": true, ...}
  {"ev": "done", "replies": n}
"""
import argparse
import ipaddress
import json
import socket
import struct
import sys
import time

ETH_P_IP = 0x0800
PACKET_OUTGOING = 4
FLAG_NAMES = "FSRPAUEC"


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def tcp_csum(src, dst, segment):
    pseudo = src + dst + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(segment))
    return csum(pseudo + segment)


def flags_str(f):
    return "".join(FLAG_NAMES[i] for i in range(8) if f & (1 << i)) or "-"


def build(a, src_mac, dst_mac):
    src, dst = socket.inet_aton(a.src), socket.inet_aton(a.dst)
    flags = 0
    for ch in a.flags:
        flags |= 1 << FLAG_NAMES.index(ch)
    payload = a.payload.encode()
    tcp = struct.pack("!HHIIBBHHH", a.sport, a.dport, a.seq, a.ack, 5 << 4, flags, 64240, 0, 0) + payload
    tcp = tcp[:16] + struct.pack("!H", tcp_csum(src, dst, tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0x1234, 0x4000, 64, socket.IPPROTO_TCP, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    return dst_mac + src_mac + struct.pack("!H", ETH_P_IP) + ip + tcp


def parse_reply(frame, a):
    """The TCP segment of frame if it answers our tuple (remote -> us), else None."""
    if len(frame) < 14 + 20 + 20 or struct.unpack("!H", frame[12:14])[0] != ETH_P_IP:
        return None
    ip = frame[14:]
    ihl = (ip[0] & 0xF) * 4
    tot = struct.unpack("!H", ip[2:4])[0]
    if ip[0] >> 4 != 4 or ip[9] != socket.IPPROTO_TCP or tot > len(ip):
        return None
    src, dst = ip[12:16], ip[16:20]
    seg = ip[ihl:tot]
    sport, dport, seq, ack, off, fl, win = struct.unpack("!HHIIBBH", seg[:16])
    if socket.inet_ntoa(src) != a.dst or socket.inet_ntoa(dst) != a.src or sport != a.dport or dport != a.sport:
        return None
    return {
        "src": socket.inet_ntoa(src), "dst": socket.inet_ntoa(dst), "sport": sport, "dport": dport,
        "seq": seq, "ack": ack, "flags": flags_str(fl), "window": win, "doff": off >> 4,
        "payload": len(seg) - (off >> 4) * 4, "ttl": ip[8], "ip_len": tot,
        "ip_csum_ok": csum(ip[:ihl]) == 0, "tcp_csum_ok": tcp_csum(src, dst, seg) == 0,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dev", required=True)
    ap.add_argument("--dst-mac", required=True, help="the router's MAC on this link")
    ap.add_argument("--src", required=True)
    ap.add_argument("--dst", required=True)
    ap.add_argument("--sport", type=int, required=True)
    ap.add_argument("--dport", type=int, required=True)
    ap.add_argument("--seq", type=int, required=True)
    ap.add_argument("--ack", type=int, required=True)
    ap.add_argument("--flags", default="A", help="subset of FSRPAUEC, default A")
    ap.add_argument("--payload", default="x")
    ap.add_argument("--wait", type=float, default=1.0, help="seconds to listen for answers")
    a = ap.parse_args()
    for addr in (a.src, a.dst):  # IPv4 only; a typo fails here, not as a silent non-answer
        ipaddress.IPv4Address(addr)

    with open("/sys/class/net/%s/address" % a.dev) as f:
        src_mac = bytes.fromhex(f.read().strip().replace(":", ""))
    dst_mac = bytes.fromhex(a.dst_mac.replace(":", ""))
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_IP))
    s.bind((a.dev, ETH_P_IP))
    s.settimeout(0.05)
    t0 = time.monotonic()
    s.send(build(a, src_mac, dst_mac))
    print(json.dumps({"ev": "sent", "t": time.time_ns(), "seq": a.seq, "ack": a.ack, "flags": a.flags,
                      "sport": a.sport, "dport": a.dport}), flush=True)
    replies = 0
    while time.monotonic() - t0 < a.wait:
        try:
            frame, addr = s.recvfrom(65536)
        except socket.timeout:
            continue
        if addr[2] == PACKET_OUTGOING:
            continue
        r = parse_reply(frame, a)
        if r is None:
            continue
        replies += 1
        r.update(ev="reply", t=time.time_ns(), after_ms=round((time.monotonic() - t0) * 1000, 3))
        print(json.dumps(r), flush=True)
    print(json.dumps({"ev": "done", "replies": replies}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
