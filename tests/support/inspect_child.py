"""A process that holds TCP sockets set with plain setsockopt, for the connections/inspect tests.

Standard library only (it may run under another user's interpreter).  argv[1] is
JSON: {"family": "ipv4"|"ipv6", "listener"|"client"|"server": [keepalive, idle,
interval, count, user_timeout_ms] or null}.  It prints one JSON line describing
its sockets, then answers each "read" line on stdin with its own getsockopt of
every socket, and exits at end of input.
"""

import json
import os
import socket
import sys

TCP = socket.IPPROTO_TCP
OPTIONS = (
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE),
    (TCP, socket.TCP_KEEPIDLE),
    (TCP, socket.TCP_KEEPINTVL),
    (TCP, socket.TCP_KEEPCNT),
    (TCP, socket.TCP_USER_TIMEOUT),
)


def configure(sock, values):
    if values is None:
        return
    for (level, name), value in zip(OPTIONS, values, strict=True):
        sock.setsockopt(level, name, value)


def describe(sock):
    out = {"fd": sock.fileno(), "inode": os.fstat(sock.fileno()).st_ino, "local": list(sock.getsockname()[:2])}
    try:
        out["remote"] = list(sock.getpeername()[:2])
    except OSError:
        out["remote"] = None
    return out


def main():
    config = json.loads(sys.argv[1])
    family, host = (socket.AF_INET, "127.0.0.1") if config["family"] == "ipv4" else (socket.AF_INET6, "::1")
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.bind((host, 0))
    listener.listen()
    client = socket.create_connection(listener.getsockname()[:2])
    server, _ = listener.accept()
    sockets = {"listener": listener, "client": client, "server": server}
    for name, sock in sockets.items():
        configure(sock, config.get(name))
    info = {name: describe(sock) for name, sock in sockets.items()}
    info["pid"] = os.getpid()
    print(json.dumps(info), flush=True)
    for line in sys.stdin:
        if line.strip() == "read":
            state = {name: [sock.getsockopt(level, opt) for level, opt in OPTIONS] for name, sock in sockets.items()}
            print(json.dumps(state), flush=True)


if __name__ == "__main__":
    main()
