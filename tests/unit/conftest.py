"""Fixtures shared by the unit tests."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab import config, kept
from tests.unit.qmp_server import FakeQMP

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def only_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy, and any connection to an address other than a loopback one (127.0.0.0/8) fails the test."""
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    real = socket.create_connection

    def loopback_only(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        if not _is_loopback(address[0]):
            raise AssertionError(f"a test tried to connect to {address!r}")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", loopback_only)


@pytest.fixture
def lab_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "lab.yaml"
    path.write_text((ROOT / "lab.yaml").read_text().replace("mbox: series/", f"mbox: {ROOT}/series/"))
    return path


@pytest.fixture
def kept_lab(lab_yaml: Path) -> Iterator[tuple[kept.KeptLab, Path]]:
    """A kept lab's state whose primary QMP socket is a QMP server (the secondary's QEMU is gone)."""
    cfg = config.load(lab_yaml)
    rundir = Path(tempfile.mkdtemp(prefix="nfcl-t-"))
    (rundir / "primary").mkdir()
    (rundir / "secondary").mkdir()
    server = FakeQMP(rundir / "primary" / "qmp.sock")
    lab = kept.KeptLab(name="dev", profile="baseline", scenario="mirror", image="img", accel="tcg",
                       rundir=str(rundir), containers={"primary": "nfcl-primary", "secondary": "nfcl-secondary"},
                       ssh_config="", started=0.0)
    kept.state_dir(cfg, lab.name).mkdir(parents=True)
    (kept.state_dir(cfg, lab.name) / "state.json").write_text(json.dumps(dataclasses.asdict(lab)))
    yield lab, lab_yaml
    server.close()
    shutil.rmtree(rundir, ignore_errors=True)
def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback and ipaddress.ip_address(host).version == 4
    except ValueError:  # a name: it would be looked up
        return False
