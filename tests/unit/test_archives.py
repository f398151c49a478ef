"""What an engine that copies run folders sends back, crafted: a truncated, corrupt or hostile
archive is the cell's one-line error (ArchiveError), and nothing lands outside the run folder."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lab.engine.remote import ArchiveError, extract_files, read_file


def archive(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return buffer.getvalue()


def file(name: str, data: bytes = b"frames") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, b""


def huge(name: str) -> bytes:
    """A member whose header says 1 TB, followed by a few bytes of it."""
    info = tarfile.TarInfo(name)
    info.size = 1 << 40
    return info.tobuf(format=tarfile.GNU_FORMAT) + b"x" * 4096


def outside(tmp: Path) -> list[Path]:
    """Whatever exists beside the run folder (the test's own folder holds only it)."""
    return [p for p in tmp.iterdir() if p.name != "run"]


def test_a_path_outside_is_refused_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError) as caught:
        extract_files(archive(file("ok.txt"), file("../escaped.txt")), "/run/lab", tmp_path / "run")
    assert "OutsideDestinationError" in str(caught.value) and "\n" not in str(caught.value)
    assert not outside(tmp_path)


def test_a_symlink_out_and_a_file_through_it_land_nowhere_outside(tmp_path: Path) -> None:
    extract_files(archive(link("up", str(tmp_path)), file("up/escaped.txt"),
                          link("hard", "/etc/passwd", tarfile.LNKTYPE)), "/run/lab", tmp_path / "run")
    assert not outside(tmp_path)
    assert not (tmp_path / "run" / "hard").exists()  # links are never taken
    assert (tmp_path / "run" / "up" / "escaped.txt").read_bytes() == b"frames"  # a folder of the run's


def test_a_huge_member_cut_short_is_refused_without_reading_it(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="ReadError"):
        extract_files(huge("tap.pcap"), "/run/lab", tmp_path / "run")
    with pytest.raises(ArchiveError, match="ReadError"):
        read_file(huge("tap.pcap"), "/run/lab/tap.pcap")


def test_garbage_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match="ReadError"):
        extract_files(b"not a tar stream at all" * 40, "/run/lab", tmp_path / "run")


WHOLE = archive(file("primary/tap.pcap", b"p" * 3000), file("primary/qmp.log", b"q" * 700),
                file("primary/record.json", b"{}"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=len(WHOLE) - 1))
def test_a_truncated_archive_is_refused_or_read_whole_never_a_crash(cut: int, tmp_path_factory: pytest.TempPathFactory
                                                                      ) -> None:
    tmp = tmp_path_factory.mktemp("cut")
    try:
        extract_files(WHOLE[:cut], "/run/lab", tmp / "run")
    except ArchiveError as exc:
        assert "\n" not in str(exc)
    else:  # cut in the trailing zero blocks: every file is there, whole
        assert (tmp / "run" / "primary" / "record.json").read_bytes() == b"{}"
        assert (tmp / "run" / "primary" / "tap.pcap").stat().st_size == 3000
    assert not outside(tmp)


NAMES = st.lists(st.sampled_from(["a", "..", "/", ".", "b", "c"]), min_size=1, max_size=5).map("/".join)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(st.tuples(NAMES, st.sampled_from(["file", "symlink", "hardlink"]), NAMES), min_size=1,
                      max_size=4))
def test_no_member_lands_outside_the_run_folder(names: list[tuple[str, str, str]],
                                                tmp_path_factory: pytest.TempPathFactory) -> None:
    tmp = tmp_path_factory.mktemp("names")
    members = [file(name) if kind == "file" else
               link(name, target, tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE)
               for name, kind, target in names]
    try:
        extract_files(archive(*members), "/run/lab", tmp / "run")
    except ArchiveError as exc:
        assert "\n" not in str(exc)
    assert not outside(tmp)
