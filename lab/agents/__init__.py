"""In-host helpers: run inside the lab's host containers with Debian's python3, standard library only."""

from __future__ import annotations

import json
import os
import signal
from typing import Any


class StopFlag:
    """Set by SIGTERM or SIGINT: the helpers finish their loop and write their records."""

    def __init__(self) -> None:
        self.set = False
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, _signo: int, _frame: object) -> None:
        self.set = True


def write_record(path: str, record: dict[str, Any]) -> None:
    """The helper's JSON record, renamed into place so that a reader never sees half of it."""
    with open(path + ".tmp", "w") as f:
        json.dump(record, f)
    os.replace(path + ".tmp", path)
