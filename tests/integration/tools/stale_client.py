#!/usr/bin/env python3
"""LAN client of the stale-flow test, run inside the lab's LAN namespace.

Modes (one connection or flow each; JSON lines on stdout, "t" = CLOCK_REALTIME in ns):
  active  TCP, TCP_NODELAY, sends a small message every --interval and reads the echoes; the socket
          is polled, so a RST is seen when it arrives, not at the next send.
  idle    TCP, connects and then blocks in one recv() (sends nothing; the server sends nothing).
  probe   TCP, idle until --probe-file exists, then sends one line and waits <= 2 s for its echo
          (a connection on the surviving uplink must still work after the failover).
  udp     UDP datagrams "<seq> ..." every --interval from a fixed source port.
The address family (IPv4 or IPv6) is the destination's.
Events: connected {local, lport}, error {errno, after_s}, probe {ok, rtt_ms}, end {state, sent}.
`state` is "error" once the socket failed, else "alive". Bounded by --duration; SIGTERM/SIGINT end
it early with the same final line.
"""
import argparse
import errno
import ipaddress
import json
import os
import select
import signal
import socket
import sys
import time


class Stop(Exception):
    pass


def emit(ev, **fields):
    sys.stdout.write(json.dumps({"t": time.time_ns(), "ev": ev, **fields}) + "\n")
    sys.stdout.flush()


def errname(e):
    return errno.errorcode.get(e.errno, str(e.errno)) if isinstance(e, OSError) and e.errno else type(e).__name__


def is_v6(addr):
    try:
        return ipaddress.ip_address(addr).version == 6
    except ValueError:  # a host name: IPv4, as before
        return False


def family(dest):
    """(address family, wildcard bind address) of a destination address."""
    return (socket.AF_INET6, "::") if is_v6(dest) else (socket.AF_INET, "0.0.0.0")


def connect(a):
    fam, any_addr = family(a.dest)
    s = socket.socket(fam, socket.SOCK_STREAM)
    if a.sport:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((any_addr, a.sport))
    s.settimeout(5)
    s.connect((a.dest, a.port))
    s.settimeout(None)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    local, lport = s.getsockname()[:2]  # IPv6: (host, port, flowinfo, scope_id)
    emit("connected", local=local, lport=lport, dest=a.dest, port=a.port)
    return s


def run_active(s, a, deadline, st):
    p = select.poll()
    p.register(s, select.POLLIN | select.POLLERR | select.POLLHUP)
    next_send = time.monotonic()
    while time.monotonic() < deadline:
        now = time.monotonic()
        if now >= next_send:
            s.send(b"%d tick\n" % st["sent"])
            st["sent"] += 1
            next_send += a.interval
            continue
        if p.poll(max(1, int((min(next_send, deadline) - now) * 1000))):
            data = s.recv(65536)
            if not data:
                raise ConnectionAbortedError(errno.ECONNABORTED, "closed by peer (eof)")
            if a.log_echo:
                emit("echo", n=len(data))


def run_idle(s, a, deadline, st):
    s.settimeout(max(0.1, deadline - time.monotonic()))
    try:
        data = s.recv(65536)  # blocks: the server never sends to this client
    except socket.timeout:
        return
    if not data:
        raise ConnectionAbortedError(errno.ECONNABORTED, "closed by peer (eof)")
    emit("unexpected_data", n=len(data))


def run_probe(s, a, deadline, st):
    while time.monotonic() < deadline:
        if a.probe_file and os.path.exists(a.probe_file):
            t0 = time.monotonic()
            s.send(b"probe\n")
            st["sent"] += 1
            s.settimeout(2)
            try:
                data = s.recv(64)
                emit("probe", ok=data == b"probe\n", rtt_ms=round((time.monotonic() - t0) * 1000, 3))
            except socket.timeout:
                emit("probe", ok=False, rtt_ms=None)
            s.settimeout(None)
            os.unlink(a.probe_file)
            continue
        r, _, _ = select.select([s], [], [], 0.05)
        if r and not s.recv(65536):
            raise ConnectionAbortedError(errno.ECONNABORTED, "closed by peer (eof)")


def run_udp(a, deadline, st):
    fam, any_addr = family(a.dest)
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.bind((any_addr, a.sport))
    emit("connected", local=s.getsockname()[0], lport=a.sport, dest=a.dest, port=a.port)
    next_send = time.monotonic()
    while time.monotonic() < deadline:
        try:
            s.sendto(b"%d udp\n" % st["sent"], (a.dest, a.port))
        except OSError as e:  # e.g. ENETUNREACH for a moment during the switch: keep sending
            st["send_errors"] = st.get("send_errors", 0) + 1
            st["last_send_error"] = errname(e)
        st["sent"] += 1
        next_send += a.interval
        time.sleep(max(0.0, next_send - time.monotonic()))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["active", "idle", "probe", "udp"])
    ap.add_argument("dest")
    ap.add_argument("port", type=int)
    ap.add_argument("--sport", type=int, default=0, help="fixed source port (required for udp)")
    ap.add_argument("--interval", type=float, default=0.1)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--probe-file", default="")
    ap.add_argument("--log-echo", action="store_true", help="active: one 'echo' line per echo received (gap benchmarks)")
    a = ap.parse_args()
    if a.mode == "udp" and not a.sport:
        ap.error("udp needs --sport")

    def on_signal(*_):
        raise Stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    t_start = time.monotonic()
    deadline = t_start + a.duration
    st = {"sent": 0}
    state = "alive"
    try:
        if a.mode == "udp":
            run_udp(a, deadline, st)
        else:
            s = connect(a)
            t_conn = time.monotonic()
            try:
                {"active": run_active, "idle": run_idle, "probe": run_probe}[a.mode](s, a, deadline, st)
            except Stop:
                raise
            except OSError as e:
                state = "error"
                emit("error", errno=errname(e), after_s=round(time.monotonic() - t_conn, 3))
    except Stop:
        pass
    except OSError as e:  # the connect itself failed
        state = "error"
        emit("error", errno=errname(e), phase="connect")
    emit("end", state=state, **st)


if __name__ == "__main__":
    main()
