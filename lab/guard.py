"""What guards a split cell's published ports: a key and a token made for the cell alone.

A split cell's secondary publishes two ports on its engine's address (by default this machine's
network address, where Docker's published ports pass the host firewall by): the destination QEMU's
migration port and the stream recorder's. Whoever connects first would feed the destination a
migration stream, or the recorder frames. So there:

- the migration runs over QEMU's own TLS with a pre-shared key: a ``tls-creds-psk`` object on each
  side (``dir`` holding ``keys.psk``, QEMU's ``username:hexkey``), the destination's in use from its
  first instant (``-global migration.tls-creds``), the source's set before ``migrate``. A connection
  without the key fails its handshake, and the destination goes on listening for the real one;
- the recorder takes a connection only once it has presented the stream token, and the filter's
  chardev (which cannot present one) reaches it through the sender agent on the primary's loopback,
  which presents the token and then passes the bytes on.

Both are made per cell with ``secrets``, written 0600 into the hosts' run folders while QEMU and the
agents need them, and withdrawn before any file of the run folder leaves it. Cells on one engine
publish nothing (their hosts share an internal network of their own) and run without either.
"""

from __future__ import annotations

import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from lab.host import RUNDIR, Host

FOLDER = "tls"  # in a host's run folder: the tls-creds object's dir, and the token beside it
PSK_FILE = f"{FOLDER}/keys.psk"  # the name QEMU's tls-creds-psk reads in its dir
TOKEN_FILE = f"{FOLDER}/stream.token"
CREDS_ID = "mig0"
PSK_USERNAME = "qemu"  # tls-creds-psk's default username, on both sides
KEY_BYTES = 32
TOKEN_BYTES = 32  # what the recorder reads first from a connection (lab.agents.recorder)


@dataclass(frozen=True)
class CellKeys:
    """A split cell's migration key and stream token; never printed (``repr`` hides them)."""

    psk: bytes = field(repr=False)
    token: bytes = field(repr=False)

    @classmethod
    def new(cls) -> CellKeys:
        return cls(secrets.token_bytes(KEY_BYTES), secrets.token_bytes(TOKEN_BYTES))

    def psk_line(self) -> str:
        return f"{PSK_USERNAME}:{self.psk.hex()}\n"

    def place(self, host: Host) -> None:
        """Into the host's run folder, readable by its owner (root in the host) alone."""
        host.write_secret(PSK_FILE, self.psk_line().encode())
        host.write_secret(TOKEN_FILE, self.token.hex().encode())


def creds_object(endpoint: str) -> str:
    """The ``-object`` of QEMU's migration credentials; ``endpoint``: server on the destination,
    client on the source."""
    return f"tls-creds-psk,id={CREDS_ID},endpoint={endpoint},dir={RUNDIR}/{FOLDER}"


def withdraw(host: Host) -> None:
    """The key and the token out of the host's run folder (once the migration's handshake is done,
    or the cell is over)."""
    for name in (PSK_FILE, TOKEN_FILE):
        host.remove(name)


def forget(rundir: Path) -> None:
    """Whatever is left of the keys in a cell's run folder, gone before the folder becomes its
    artefacts: a host that could not withdraw them (an engine gone) may still have copied them back."""
    for folder in rundir.glob(f"*/{FOLDER}"):
        shutil.rmtree(folder, ignore_errors=True)
