"""How much the lab reads of what comes from outside it: a server's answer, an engine's archive of a
host's files, a guest's record. Each has a cap well past what the lab itself makes there; a read
stops at it, and the error names what was read and the cap, never the data."""

from __future__ import annotations

from collections.abc import Iterable
from typing import BinaryIO

SERVER_LIMIT = 32 * 2**20  # of one answer from a server: a series' mbox of a hundred patches is a few MiB
# Of one archive from an engine (a file of a host's run folder, or the whole folder), spooled to disk:
# the largest configuration (20 kfps for a 60 s warm-up and a 120 s hold) makes two pcaps of about
# 280 MB each and a generator record of 90 MB.
ENGINE_LIMIT = 2**30
# Of the guest receiver's record, in memory: a line per frame of under 64 bytes, and the largest
# configuration sends 3.6 M frames (230 MB).
RECORD_LIMIT = 256 * 2**20
# Of a series build's output (/opt/qemu: QEMU's binary and the data it installs, about 30 MB).
BUILD_OUTPUT_LIMIT = 512 * 2**20


def size(limit: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if limit >= scale and limit % scale == 0:
            return f"{limit // scale} {unit}"
    return f"{limit} bytes"


def past(what: str, limit: int, whence: str) -> str:
    """The one line that says ``what`` went past ``limit``, the most the lab reads ``whence``."""
    return f"{what} is larger than {size(limit)}, the most the lab reads {whence}"


def copy(chunks: Iterable[bytes], into: BinaryIO, limit: int) -> bool:
    """``chunks`` written to ``into`` until they end (True) or go past ``limit`` bytes (False: the
    rest is never read). ``chunks`` is closed either way: a stream's connection goes with it."""
    total = 0
    try:
        for chunk in chunks:
            total += len(chunk)
            if total > limit:
                return False
            into.write(chunk)
        return True
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
