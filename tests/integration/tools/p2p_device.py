#!/usr/bin/env python3
"""Hold a point-to-point device (a tun) the way pppd holds pppoe-wan, until killed.

Run inside the router namespace as root. This host's kernel has no PPP; a tun device is the closest
stand-in: POINTOPOINT and NOARP, no Ethernet header, running while a process holds it and gone the
moment that process ends (it is not made persistent). Like pppd it appears first, comes up, and gets
its addresses a moment later: --address-after seconds after the device is up (0: at once; negative:
never, the test adds them itself), the local address with its peer (`ip addr add L peer P`).
Prints one JSON line when the device is up and one when its addresses are set, then sleeps.
"""
import argparse
import fcntl
import json
import os
import signal
import struct
import subprocess
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000


def ip(*args):
    subprocess.run(["ip", *args], check=True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--local", required=True)
    parser.add_argument("--peer", required=True)
    parser.add_argument("--address-after", type=float, default=0.0)
    args = parser.parse_args()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", args.name.encode(), IFF_TUN | IFF_NO_PI))
    # A ppp device gets only the link-local addresses pppd sets, none of its own.
    ip("link", "set", args.name, "addrgenmode", "none")
    ip("link", "set", args.name, "up")
    print(json.dumps({"ev": "up", "t": time.time()}), flush=True)
    if args.address_after >= 0:
        time.sleep(args.address_after)
        ip("addr", "add", args.local, "peer", args.peer + "/32", "dev", args.name)
        print(json.dumps({"ev": "addresses", "t": time.time()}), flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
