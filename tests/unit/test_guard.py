"""lab.guard: a split cell's key and token, as written for QEMU and the agents, and never beyond."""

from __future__ import annotations

import re
import stat
from pathlib import Path

from lab import guard
from lab.results import artefacts
from tests.unit.folder_host import FolderHost


def test_each_cell_has_keys_of_its_own_that_never_print() -> None:
    first, second = guard.CellKeys.new(), guard.CellKeys.new()
    assert len({first.psk, first.token, second.psk, second.token}) == 4
    assert len(first.psk) == guard.KEY_BYTES and len(first.token) == guard.TOKEN_BYTES
    for shown in (repr(first), str(first)):
        assert first.psk.hex() not in shown and first.token.hex() not in shown


def test_the_key_file_is_qemus_username_and_hex_key() -> None:
    keys = guard.CellKeys.new()
    assert re.fullmatch(r"qemu:[0-9a-f]{64}\n", keys.psk_line())
    assert bytes.fromhex(keys.psk_line().split(":")[1]) == keys.psk


def test_placed_for_the_owner_alone_and_withdrawn(tmp_path: Path) -> None:
    host = FolderHost(tmp_path / "secondary")
    keys = guard.CellKeys.new()
    keys.place(host)
    for name, content in ((guard.PSK_FILE, keys.psk_line()), (guard.TOKEN_FILE, keys.token.hex())):
        path = host.path(name)
        assert path.read_text() == content
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
    assert stat.S_IMODE(host.path(guard.FOLDER).stat().st_mode) & 0o077 == 0
    keys.place(host)  # placed again (a second attempt of the cell): still the owner's alone
    assert stat.S_IMODE(host.path(guard.PSK_FILE).stat().st_mode) == 0o600
    guard.withdraw(host)
    assert not host.path(guard.PSK_FILE).exists() and not host.path(guard.TOKEN_FILE).exists()


def test_a_run_folder_never_takes_keys_into_its_artefacts(tmp_path: Path) -> None:
    rundir = tmp_path / "run"
    for role in ("primary", "secondary"):
        guard.CellKeys.new().place(FolderHost(rundir / role))  # as a host that could not withdraw them left them
        (rundir / role / "qemu.log").write_text("QEMU's log\n")
    kept = artefacts.copy_to(rundir, tmp_path / "kept")
    moved = artefacts.move_to(rundir, tmp_path / "out")
    for folder in (kept, moved):
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
        assert files == ["primary", "primary/qemu.log", "secondary", "secondary/qemu.log"], files
