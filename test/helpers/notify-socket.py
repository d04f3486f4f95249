#!/usr/bin/env python3
"""Stands in for systemd's notification socket ($NOTIFY_SOCKET): binds a unix datagram socket at
PATH (writable by anyone, so an agent running as another user can send), prints "ready", then one
JSON line per message: {"pid": sender pid, "fields": ["READY=1", ...]}. Like systemd, it closes
every file descriptor a message carries (systemd-notify's BARRIER=1 waits for exactly that).

Usage: notify-socket.py PATH   (runs until SIGTERM)
"""
import array
import json
import os
import signal
import socket
import struct
import sys

path = sys.argv[1]
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sock.bind(path)
os.chmod(path, 0o777)
sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print("ready", flush=True)

while True:
    data, ancdata, _flags, _addr = sock.recvmsg(4096, socket.CMSG_SPACE(64 * 4) + socket.CMSG_SPACE(12))
    pid = None
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds = array.array("i")
            fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
            for fd in fds:
                os.close(fd)
        elif level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            pid, _uid, _gid = struct.unpack("iII", payload[:12])
    fields = [line for line in data.decode("utf-8", "replace").split("\n") if line]
    print(json.dumps({"pid": pid, "fields": fields}), flush=True)
