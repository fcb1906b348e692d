#!/usr/bin/env python3
"""Targets for tests/integration/test_track_methods_http.sh, run in the lab's core namespace.

  http  ADDR PORT MODEFILE            HTTP server; answers HEAD with the status in MODEFILE (200 if absent)
  https ADDR PORT MODEFILE CERT KEY   the same behind TLS (the certificate is self-signed)
  udp-echo ADDR PORT                  returns every datagram to its sender (what nping-udp needs)

Every server ends by itself after --lifetime seconds (default 300), as every test process must.
"""
import http.server
import socket
import ssl
import sys
import threading


def status_from(mode_file):
    try:
        with open(mode_file, encoding="ascii") as f:
            return int(f.read().strip() or "200")
    except (OSError, ValueError):
        return 200


def http_server(addr, port, mode_file, tls=None):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):  # noqa: N802 (the name http.server calls)
            self.send_response(status_from(mode_file))
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer((addr, port), Handler)
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(tls[0], tls[1])
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


def udp_echo(addr, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((addr, port))
    while True:
        data, peer = s.recvfrom(2048)
        s.sendto(data, peer)


def main():
    args = sys.argv[1:]
    lifetime = 300.0
    if len(args) >= 2 and args[0] == "--lifetime":
        lifetime = float(args[1])
        args = args[2:]
    kind = args[0]
    if kind == "http":
        target = lambda: http_server(args[1], int(args[2]), args[3])  # noqa: E731
    elif kind == "https":
        target = lambda: http_server(args[1], int(args[2]), args[3], (args[4], args[5]))  # noqa: E731
    elif kind == "udp-echo":
        target = lambda: udp_echo(args[1], int(args[2]))  # noqa: E731
    else:
        sys.exit(f"unknown server kind {kind!r}")
    threading.Thread(target=target, daemon=True).start()
    threading.Event().wait(lifetime)


if __name__ == "__main__":
    main()
