"""report.json as a file: the user's mode (the umask), on disk before it replaces the last one, and
no temporary file left when writing fails."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from lab.results.report import Report


def test_the_report_gets_the_users_umask_not_0600(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        path = Report(config="lab.yaml", accel="tcg").write(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # the group reads it, as any file the user writes


def test_the_report_is_on_disk_before_it_replaces_the_last_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    calls: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))[1])
    Report(config="lab.yaml", accel="tcg").write(tmp_path)
    assert calls[:2] == ["fsync", "replace"], calls


# A file size limit makes the write fail half-way, as a full disk would.
FAILING = """
import resource, signal, sys
from pathlib import Path
from lab.results.report import Report
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
out = Path(sys.argv[1])
Report(config="lab.yaml", accel="tcg").write(out)
resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))
try:
    Report(config="lab.yaml", accel="tcg", builds={"big": {"x": "y" * 100000}}).write(out)
except OSError as exc:
    print("failed:", exc.strerror)
"""


def test_a_report_that_cannot_be_written_leaves_no_temporary_file_and_the_last_one_whole(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", FAILING, str(tmp_path)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.stdout.startswith("failed: File too large"), (proc.stdout, proc.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]
    assert '"big"' not in (tmp_path / "report.json").read_text()
