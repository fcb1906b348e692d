#!/usr/bin/env python3
"""Stamp the moment a line appears in a growing log file.

uplinkd logs to stderr (flushed per line) without timestamps; the test follows its log file from
--offset: {"ev": "ready"} once it watches the file, then for the first line containing --pattern
{"ev": "match", "t": CLOCK_REALTIME ns, "line": ...}. It blocks in inotify (through ctypes, so the
stamp is taken when the kernel wakes it after the write, like any socket reader) and falls back to
polling every --poll seconds where inotify is unavailable. Exits 1 after --timeout seconds.
"""
import argparse
import ctypes
import ctypes.util
import json
import os
import select
import sys
import time

IN_MODIFY = 0x00000002
IN_NONBLOCK = 0o4000


def inotify_fd(path):
    """A non-blocking inotify fd watching path for writes, or None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fd = libc.inotify_init1(IN_NONBLOCK)
        if fd < 0:
            return None
        if libc.inotify_add_watch(fd, path.encode(), IN_MODIFY) < 0:
            os.close(fd)
            return None
        return fd
    except (OSError, AttributeError):
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file")
    ap.add_argument("pattern")
    ap.add_argument("--offset", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--poll", type=float, default=0.001)
    a = ap.parse_args()
    deadline = time.monotonic() + a.timeout
    pos, buf = a.offset, b""
    ino = inotify_fd(a.file)
    fd = os.open(a.file, os.O_RDONLY)
    print(json.dumps({"ev": "ready", "t": time.time_ns(), "inotify": ino is not None}), flush=True)
    while True:
        chunk = os.pread(fd, 1 << 16, pos)
        if chunk:
            pos += len(chunk)
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if a.pattern.encode() in line:
                    t = time.time_ns()
                    print(json.dumps({"ev": "match", "t": t, "line": line.decode(errors="replace")}), flush=True)
                    return 0
            continue
        left = deadline - time.monotonic()
        if left <= 0:
            break
        if ino is not None:
            select.select([ino], [], [], min(left, 0.5))  # also wakes now and then, in case of a missed event
            try:
                os.read(ino, 4096)
            except BlockingIOError:
                pass
        else:
            time.sleep(a.poll)
    print(json.dumps({"ev": "timeout", "t": time.time_ns(), "timeout": a.timeout}), flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
