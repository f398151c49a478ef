"""stdin/stdout <-> a socket inside the host, for what listens on the host's loopback only:

    python3 -m lab.agents.relay 127.0.0.1 22               sshd (the ProxyCommand of `lab ssh`)
    python3 -m lab.agents.relay unix /run/lab/console.sock  the guest's serial console (`lab console`)

run through `docker exec -i HOST ...`, so that no port of the host is published.
"""

from __future__ import annotations

import os
import selectors
import socket
import sys


def connect(where: list[str]) -> socket.socket:
    if where[0] == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(where[1])
    else:
        sock = socket.create_connection((where[0], int(where[1])), timeout=10)
    sock.settimeout(None)
    return sock


def main() -> int:
    sock = connect(sys.argv[1:3])
    sel = selectors.DefaultSelector()
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    sel.register(stdin, selectors.EVENT_READ, "in")
    sel.register(sock, selectors.EVENT_READ, "sock")
    while True:
        for key, _mask in sel.select():
            if key.data == "in":
                data = os.read(stdin, 65536)
                if not data:
                    sock.shutdown(socket.SHUT_WR)
                    sel.unregister(stdin)
                    continue
                sock.sendall(data)
            else:
                data = sock.recv(65536)
                if not data:
                    return 0
                os.write(stdout, data)


if __name__ == "__main__":
    raise SystemExit(main())
