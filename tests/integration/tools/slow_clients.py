#!/usr/bin/env python3
"""Clients that misbehave against an HTTP listener, each with a bound on how it must end:
- one that connects and sends nothing: closed by the server within IDLE_BOUND s;
- one that sends a 64 KiB header: answered 431 (or closed) within 2 s;
- 24 idle connections at once (more than the listener's limit of 8 per client address): each is
  closed or refused within IDLE_BOUND s, and a normal request made afterwards is answered.
They connect from SOURCE (127.0.0.2), so the per-address limit keeps them from crowding out the
scraper on 127.0.0.1.
Usage: slow_clients.py <address> <port>. Prints one line per client; exits 1 on a bound broken."""
import socket
import sys
import time

IDLE_BOUND = 7.0  # the listener's idle timeout (5 s) + 2 s
SOURCE = ('127.0.0.2', 0)


def closed_within(sock, bound):
    """Seconds until the peer closes (or resets), or None after `bound`; returns what it sent too."""
    start = time.monotonic()
    sock.settimeout(0.2)
    data = b''
    while time.monotonic() - start < bound:
        try:
            chunk = sock.recv(4096)
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - start, data
        if not chunk:
            return time.monotonic() - start, data
        data += chunk
    return None, data


def connect(host, port):
    return socket.create_connection((host, port), timeout=3, source_address=SOURCE)


def silent(host, port):
    s = connect(host, port)
    t, _ = closed_within(s, IDLE_BOUND)
    s.close()
    if t is None:
        return f'silent client: still open after {IDLE_BOUND} s'
    print(f'silent client: closed by the server after {t:.2f} s (bound {IDLE_BOUND} s)')
    return None


def huge_header(host, port):
    s = connect(host, port)
    start = time.monotonic()
    try:
        s.sendall(b'GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: ' + b'a' * 65536 + b'\r\n\r\n')
    except (ConnectionResetError, BrokenPipeError):
        pass
    t, data = closed_within(s, 2.0)
    s.close()
    status = data.split(b'\r\n', 1)[0].decode(errors='replace')
    if t is None and not data:
        return 'huge header: neither answered nor closed within 2 s'
    if data and b' 431 ' not in data.split(b'\r\n', 1)[0] + b' ':
        return f'huge header: answered {status!r}, expected 431'
    elapsed = time.monotonic() - start
    print(f'huge header (64 KiB): {status or "closed"} after {elapsed:.2f} s (bound 2 s)')
    return None


def many_idle(host, port):
    socks = []
    for _ in range(24):
        try:
            socks.append(connect(host, port))
        except OSError:
            break
    start = time.monotonic()
    open_left = 0
    for s in socks:
        t, _ = closed_within(s, max(0.1, IDLE_BOUND - (time.monotonic() - start)))
        open_left += t is None
        s.close()
    if open_left:
        return f'24 idle connections: {open_left} still open after {IDLE_BOUND} s'
    s = connect(host, port)
    s.sendall(b'GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
    _, data = closed_within(s, 3.0)
    s.close()
    if not data.startswith(b'HTTP/1.1 200'):
        return f'after 24 idle connections: a scrape got {data[:40]!r}'
    print(f'24 idle connections ({len(socks)} connected): all closed within {IDLE_BOUND} s; a scrape then answered 200')
    return None


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    problems = [p for p in (silent(host, port), huge_header(host, port), many_idle(host, port)) if p]
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
