"""stdin/stdout <-> a TCP port inside the host: the ProxyCommand that reaches a host's sshd.

sshd listens on the host's loopback only; `docker exec -i HOST python3 -m lab.agents.relay 127.0.0.1 22`
carries the SSH connection there without publishing any port.
"""

from __future__ import annotations

import os
import selectors
import socket
import sys


def main() -> int:
    host, port = sys.argv[1], int(sys.argv[2])
    sock = socket.create_connection((host, port), timeout=10)
    sock.settimeout(None)
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
