#!/usr/bin/env python3
"""A bulk TCP transfer whose success means every byte arrived (test_pmtu.sh).

  bulk_transfer.py serve --bind ADDR --port P --duration S
      accepts one connection at a time, reads to EOF, answers with the byte count as a decimal
      line, and goes on until --duration seconds have passed (bounded).
  bulk_transfer.py send --to ADDR --port P --bytes N --timeout S
      sends N bytes, half-closes, reads the server's count; exit 0 when it is N, 1 when the
      transfer stalled or fell short within --timeout seconds (every step is bounded by it).
The last line on stdout says what happened: "received N of N in T s" or why not.
"""
import argparse
import socket
import struct
import sys
import threading
import time


def drain(conn, end):
    """Reads one connection to EOF and answers with the count; a stalled sender's never ends, so
    each connection has its own thread and a later transfer is never queued behind it."""
    conn.settimeout(max(0.1, end - time.monotonic()))
    count = 0
    try:
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            count += len(chunk)
        conn.sendall(f"{count}\n".encode())
    except OSError:
        pass  # the sender gave up (reset) or the duration ended: nothing to answer
    finally:
        conn.close()


def serve(args):
    family = socket.AF_INET6 if ":" in args.bind else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((args.bind, args.port))
    listener.listen(4)
    end = time.monotonic() + args.duration
    while time.monotonic() < end:
        listener.settimeout(max(0.1, end - time.monotonic()))
        try:
            conn, _ = listener.accept()
        except socket.timeout:
            break
        threading.Thread(target=drain, args=(conn, end), daemon=True).start()
    return 0


def send(args):
    family = socket.AF_INET6 if ":" in args.to else socket.AF_INET
    start = time.monotonic()
    deadline = start + args.timeout
    sock = socket.socket(family, socket.SOCK_STREAM)
    payload = b"\x5a" * 65536
    sent = 0
    try:
        sock.settimeout(args.timeout)
        sock.connect((args.to, args.port))
        while sent < args.bytes:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            sent += sock.send(payload[: min(len(payload), args.bytes - sent)])
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = sock.recv(64)
            if not chunk:
                break
            answer += chunk
    except OSError as e:
        print(f"stalled after sending {sent} of {args.bytes} bytes in {time.monotonic() - start:.1f} s: {e}")
        # Reset rather than close: a FIN queued behind undeliverable data would never arrive.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return 1
    finally:
        sock.close()
    received = int(answer.decode().strip() or "0")
    took = time.monotonic() - start
    print(f"received {received} of {args.bytes} in {took:.2f} s")
    return 0 if received == args.bytes else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--bind", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--duration", type=float, required=True)
    c = sub.add_parser("send")
    c.add_argument("--to", required=True)
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--bytes", type=int, required=True)
    c.add_argument("--timeout", type=float, required=True)
    args = parser.parse_args()
    return serve(args) if args.mode == "serve" else send(args)


if __name__ == "__main__":
    sys.exit(main())
