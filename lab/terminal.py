"""This terminal, in raw mode, wired to a remote end until that end closes (or the escape key)."""

from __future__ import annotations

import os
import select
import sys
import termios
import tty
from collections.abc import Callable
from typing import Any

ESCAPE = b"\x1d"  # Ctrl-]


def session(remote: Any, recv: Callable[[], bytes], send: Callable[[bytes], None],
            end_input: Callable[[], None], escape: bool = False) -> None:
    """``remote`` is anything select() takes; ``recv`` returns b"" when the remote end is done."""
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd) if sys.stdin.isatty() else None
    try:
        if saved is not None:
            tty.setraw(fd)
        while True:
            readable, _, _ = select.select([remote, fd], [], [])
            if remote in readable:
                data = recv()
                if not data:
                    return
                os.write(sys.stdout.fileno(), data)
            if fd in readable:
                data = os.read(fd, 1024)
                if not data:
                    end_input()
                elif escape and ESCAPE in data:
                    return
                else:
                    send(data)
    finally:
        if saved is not None:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
