"""What an engine that copies run folders sends back, crafted: a truncated, corrupt or hostile
archive is the cell's one-line error (ArchiveError), and nothing lands outside the run folder."""

from __future__ import annotations

import io
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lab.engine import CopiedHost, Engine
from lab.engine.remote import ArchiveError, copy_file, extract_files, fetch, fetch_folder
from lab.errors import ScenarioError
from tests.unit.engine_server import Archive, ArchiveEngine


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
        copy_file(huge("tap.pcap"), "/run/lab/tap.pcap", tmp_path / "run" / "tap.pcap")
    assert not (tmp_path / "run" / "tap.pcap").exists()


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


# -- through the Docker SDK, from an engine that sends any bytes (tests.unit.engine_server) -----------

@pytest.fixture(scope="module")
def engine() -> Iterator[ArchiveEngine]:
    served = ArchiveEngine()
    yield served
    served.close()


def endless() -> Iterator[bytes]:
    """An archive that never ends: a member whose header says 1 TB, then its bytes, forever."""
    yield huge("tap.pcap")
    while True:
        yield b"\0" * 65536


def test_a_file_past_the_cap_is_refused_naming_it_and_the_cap(engine: ArchiveEngine, tmp_path: Path) -> None:
    engine.archive = Archive(endless)
    started = time.monotonic()
    with pytest.raises(ArchiveError) as failure:
        fetch(engine.container(), "/run/lab/tap.pcap", tmp_path / "run" / "tap.pcap", limit=2**20)
    assert str(failure.value) == ("the engine's archive of /run/lab/tap.pcap is larger than 1 MiB, the most the "
                                  "lab reads of one archive from an engine")
    assert time.monotonic() - started < 10
    assert not outside(tmp_path) and not (tmp_path / "run").exists()


def test_a_run_folder_past_the_cap_is_refused_naming_it_and_the_cap(engine: ArchiveEngine, tmp_path: Path) -> None:
    engine.archive = Archive(endless)
    with pytest.raises(ArchiveError, match=r"^the engine's archive of /run/lab is larger than 1 MiB, the most "):
        fetch_folder(engine.container(), "/run/lab", tmp_path / "run", limit=2**20)
    assert not outside(tmp_path) and not (tmp_path / "run").exists()


def test_a_file_of_the_run_folder_comes_whole_through_the_sdk(engine: ArchiveEngine, tmp_path: Path) -> None:
    engine.archive = Archive(lambda: iter([WHOLE[:1000], WHOLE[1000:]]))
    assert fetch(engine.container(), "/run/lab/primary/tap.pcap", tmp_path / "tap.pcap")
    assert (tmp_path / "tap.pcap").read_bytes() == b"p" * 3000
    engine.archive = None  # the engine has no such file
    assert not fetch(engine.container(), "/run/lab/primary/tap.pcap", tmp_path / "tap.pcap")
    assert not (tmp_path / "tap.pcap").exists()


MEMBERS = st.one_of(
    st.builds(file, NAMES | st.sampled_from(["/etc/x", "primary/tap.pcap", "a/../../b"]), st.binary(max_size=600)),
    st.builds(link, NAMES, st.sampled_from(["/etc/passwd", "..", "../..", "/", "a"]),
              st.sampled_from([tarfile.SYMTYPE, tarfile.LNKTYPE])))


@st.composite
def engine_answers(draw: st.DrawFn) -> Archive:
    """What an engine may send for a host's files: an archive of any members (names out of the
    folder, links out of it), whole, truncated, with a member far larger than what follows, with
    garbage after it, or garbage alone; in any pieces; or announced longer than it is."""
    data = archive(*draw(st.lists(MEMBERS, max_size=5)))
    shape = draw(st.sampled_from(["whole", "cut", "huge", "garbage after", "garbage"]))
    if shape == "cut":
        data = data[:draw(st.integers(0, max(0, len(data) - 1)))]
    elif shape == "huge":
        data = huge("tap.pcap") + data
    elif shape == "garbage after":
        data += draw(st.binary(min_size=1, max_size=300))
    elif shape == "garbage":
        data = draw(st.binary(max_size=3000))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=4)))
    pieces = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    return Archive(lambda: iter(pieces), short_by=draw(st.sampled_from([0, 0, 0, 512])))


@settings(max_examples=80, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(answer=engine_answers())
def test_whatever_an_engine_sends_a_host_is_one_line_and_nothing_lands_outside(
        engine: ArchiveEngine, answer: Archive, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A host on an engine that copies run folders, reading a file and taking its folder back when
    it goes: each ends well or is the cell's one-line error, and nothing lands outside its folder."""
    tmp = tmp_path_factory.mktemp("engine")
    engine.archive = answer
    host = CopiedHost(Engine(engine.client, "archives"), engine.container(), "secondary", tmp / "run")
    for read in (lambda: host.path("tap.pcap"), lambda: host.let_go(files=True)):
        try:
            read()
        except ScenarioError as exc:
            assert str(exc).strip() and "\n" not in str(exc), repr(str(exc))
        assert not outside(tmp)
