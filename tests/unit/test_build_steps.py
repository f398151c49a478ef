"""Per-step build timings, the series build container's files, and what lab bench reads and writes
(without Docker)."""

from __future__ import annotations

import dataclasses
import io
import tarfile
from pathlib import Path

import pytest

from lab import bench, bounds, cli
from lab.engine import building
from lab.errors import ImageBuildError
from lab.images import IMAGES_DIR, BuildStream, Context, ImageSet
from lab.images.build import build_output, regular_files, series_files
from lab.results.report import Row
from tests.unit.engine_server import Archive, ArchiveEngine
from tests.unit.test_cli_errors import one_line


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_each_step_gets_the_seconds_until_the_next_one_and_the_last_until_the_end() -> None:
    clock = Clock()
    reading = BuildStream("qemu", "nfcl/qemu:1", Path("/logs/q.log"), clock=clock)
    reading.read("Step 1/3 : FROM nfcl/base:x")
    clock.now += 0.5
    reading.read("Step 2/3 : RUN apt-get update")
    reading.read(" ---> Using cache")
    clock.now += 2.0
    reading.read("Step 3/3 : RUN ninja qemu-system-x86_64")
    clock.now += 200.25
    reading.finish()
    assert [(s["step"], s["seconds"], s["cached"]) for s in reading.steps] == [
        ("1/3", 0.5, False), ("2/3", 2.0, True), ("3/3", 200.2, False)]
    assert reading.steps[2]["instruction"] == "RUN ninja qemu-system-x86_64"
    assert {s["image"] for s in reading.steps} == {"qemu"} and {s["tag"] for s in reading.steps} == {"nfcl/qemu:1"}


def test_a_failed_build_still_times_its_last_step() -> None:
    clock = Clock()
    reading = BuildStream("guest", "nfcl/guest:1", Path("/logs/g.log"), clock=clock)
    events = reading.events([{"stream": "Step 1/1 : RUN false\n"}, {"error": "exit 1"}])
    next(events)
    clock.now += 3
    with pytest.raises(Exception, match="failed at step 1/1"):
        list(events)
    assert reading.steps[0]["seconds"] == 3.0


def test_a_container_build_names_its_steps_apart_and_its_apply_failure_stays_one_line() -> None:
    reading = BuildStream("qemu-series", "nfcl/qemu-series:p-1", Path("/logs/p.log"), prefix="container ",
                          nonce="n0nce")
    for line in ("Step 1/2 : apply-series /src/qemu /tmp/series",
                 "SERIES-APPLY-FAILED:n0nce patch 2/3: [PATCH 2/3] net: y: hunks do not apply at net/x.c:3 "
                 "(base: QEMU 10)"):
        reading.read(line)
    assert reading.steps[0]["step"] == "container 1/2"
    message = str(reading.failure("build-series exited with 1"))
    assert "patch 2/3" in message and "net/x.c:3" in message and "\n" not in message


def test_a_series_container_gets_the_scripts_and_the_patches_in_order() -> None:
    ctx = Context(IMAGES_DIR / "series")
    ctx.add_bytes("patches/0002-of-0002.patch", b"second")
    ctx.add_bytes("patches/0001-of-0002.patch", b"first")
    with tarfile.open(fileobj=io.BytesIO(series_files(ctx))) as tar:
        members = {m.name: m for m in tar}
    assert list(members) == ["tmp/series/0001-of-0002.patch", "tmp/series/0002-of-0002.patch",
                             "usr/local/bin/apply-series", "usr/local/bin/apply-tree", "usr/local/bin/build-series"]
    assert members["usr/local/bin/build-series"].mode == 0o755


def test_the_regular_files_of_an_archive_keep_their_modes() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        folder = tarfile.TarInfo("qemu")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        info = tarfile.TarInfo("qemu/bin/qemu-system-x86_64")
        info.size, info.mode = 3, 0o755
        tar.addfile(info, io.BytesIO(b"elf"))
    buf.seek(0)
    assert regular_files(buf) == {"qemu/bin/qemu-system-x86_64": (b"elf", 0o755)}


def test_the_series_image_keeps_only_the_qemu_folder() -> None:
    dockerfile = (IMAGES_DIR / "series" / "Dockerfile").read_text()
    assert "FROM scratch" in dockerfile and "COPY qemu /opt/qemu" in dockerfile


def test_steps_of_shared_images_are_counted_once() -> None:
    step = {"image": "qemu", "tag": "nfcl/qemu:1", "step": "1/1", "instruction": "RUN x", "seconds": 9.0,
            "cached": False}
    own = dict(step, tag="nfcl/runtime:b-1", image="runtime")
    sets = [ImageSet("a", "b", "q", "g", "r", build_steps=[step]),
            ImageSet("c", "b", "q", "g", "r", build_steps=[step, own])]
    assert bench.unique_steps(sets) == [step, own]


PROC = """/proc/1/status:Name:\tsleep
/proc/1/status:VmHWM:\t     980 kB
/proc/42/status:Name:\tqemu-system-x86
/proc/42/status:VmHWM:\t  301056 kB
/proc/43/status:Name:\tpython3
/proc/43/status:VmHWM:\t  900000 kB
"""


def test_the_qemu_peak_is_read_from_proc_and_nothing_else_counts() -> None:
    assert bench.qemu_vmhwm_mb(PROC) == 294.0
    assert bench.qemu_vmhwm_mb("/proc/1/status:Name:\tsleep\n") == 0.0


def test_container_memory_is_counted_as_docker_stats_shows_it() -> None:
    v2 = {"memory_stats": {"usage": 300 * 2**20, "stats": {"inactive_file": 44 * 2**20}}}
    v1 = {"memory_stats": {"usage": 100 * 2**20, "stats": {"total_inactive_file": 10 * 2**20}}}
    assert bench.container_memory_mb(v2) == 256.0 and bench.container_memory_mb(v1) == 90.0
    assert bench.container_memory_mb({}) == 0.0


def test_the_series_copy_changes_one_line_of_the_first_patch(tmp_path: Path) -> None:
    series = tmp_path / "series"
    series.mkdir()
    (series / "0001-a.patch").write_text("Subject: [PATCH 1/2] a\n\nwhy\n\nSigned-off-by: A <a@x>\n---\n")
    (series / "0002-b.patch").write_text("Subject: [PATCH 2/2] b\n\nSigned-off-by: A <a@x>\n---\n")
    copy = bench.changed_copy(series, tmp_path / "copy")
    first = (copy / "0001-a.patch").read_text().splitlines()
    assert len(first) == 7 and first[4].startswith("Bench: ") and first[5] == "Signed-off-by: A <a@x>"
    assert (copy / "0002-b.patch").read_text() == (series / "0002-b.patch").read_text()
    mbox = tmp_path / "one.mbox"
    mbox.write_text("From x\nSubject: c\n\nSigned-off-by: A <a@x>\n")
    assert bench.changed_copy(mbox, tmp_path / "copy2").read_text().count("Bench: ") == 1


def test_bench_json_and_its_table_carry_every_figure() -> None:
    result = bench.Bench(
        machine={"cores": 2}, run="abc123",
        cold_build={"seconds": 300.0, "steps": [{"image": "qemu", "step": "21/25", "instruction": "RUN ninja",
                                                 "seconds": 150.0, "tag": "t", "cached": False}],
                    "prefix": "nfcl-bench-abc123", "from_cache": 0, "images": {}},
        series_rebuild={"seconds": 9.5, "images": {"nfcl/qemu-series:x": 7.0, "nfcl/runtime:x": 2.5}, "steps": [],
                        "from": "control"},
        scenario={"cell": "baseline-redirector", "wall_s": 12.0, "timings": {"boot": 4.0, "total": 11.0},
                  "verdict": "continuous", "expected": "continuous"},
        matrix=[{"jobs": 1, "cells": 6, "wall_s": 50.0, "all_match": True, "verdicts": {},
                 "guest": {"baseline-guest": {"latency_ms": {"p50": 0.4, "p99": 2.5, "max": 7.25},
                                              "clock_uncertainty_ms": {"primary": 0.12}}}}],
        memory={"primary": {"container_mb": 400.0, "qemu_vmhwm_mb": 290.0}})
    data = result.to_json()
    assert set(data) == {"machine", "run", "cold_build", "series_rebuild", "scenario", "matrix", "memory"}
    text = "\n".join(f"{what}: {figure}" for what, figure in result.rows())
    for expected in ("cold build, all images: 300 s", "series rebuild after a one-file change: 9.5 s",
                     "warm scenario baseline-redirector, wall: 12.0 s", "matrix, 6 cells, --jobs 1, wall: 50.0 s",
                     "peak memory, primary QEMU (VmHWM): 290 MB",
                     "baseline-guest: latency to the guest, p99 / max: 2.5 / 7.2 ms",
                     "baseline-guest: primary guest clock offset, +-: 0.12 ms"):
        assert expected in text, text


def test_a_guest_cells_figures_and_none_for_a_stream_cell() -> None:
    guest = Row.of(profile="baseline", scenario="guest", filter="filter-redirector", expected="continuous",
                   verdict="continuous", accel="tcg")
    guest = dataclasses.replace(guest, guest_latency_ms={"p50": 0.4, "p99": 2.5, "max": 7.25},
                                guest_clock={"primary": {"offset_s": 0.5, "uncertainty_ms": 0.12}, "secondary": None})
    assert bench.guest_figures(guest) == {"latency_ms": {"p50": 0.4, "p99": 2.5, "max": 7.25},
                                          "clock_uncertainty_ms": {"primary": 0.12}}
    stream = dataclasses.replace(guest, guest_latency_ms=None, guest_clock=None)
    assert bench.guest_figures(stream) == {}


def test_bench_refuses_bad_input_in_one_line(lab_yaml: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    assert "not a positive whole number" in one_line(["bench", "--config", str(lab_yaml), "--jobs", "0"], capsys)
    assert "unknown name 'nope'" in one_line(["bench", "--config", str(lab_yaml), "--scenario", "nope"], capsys)
    err = one_line(["bench", "--config", str(lab_yaml), "--profile", "baseline", "--profile", "control",
                    "--scenario", "redirector-when-stopped"], capsys)
    assert "every selected cell is expected unsupported" in err
    assert cli.EXIT_LAB_ERROR == 2


def test_a_series_builds_output_past_the_cap_fails_its_image_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """A series is untrusted code, and its build's /opt/qemu is read through the engine: at most
    BUILD_OUTPUT_LIMIT of it (1 MiB here), then the image fails saying so."""
    monkeypatch.setattr(bounds, "BUILD_OUTPUT_LIMIT", 2**20)
    engine = ArchiveEngine(Archive(lambda: iter([b"\0" * 65536] * 40)))
    try:
        reading = BuildStream("qemu-series", "nfcl/qemu-series:p-1", Path("/logs/p.log"), prefix="container ")
        with pytest.raises(ImageBuildError) as failure:
            build_output(building.BuildContainer(engine.container()), reading)
    finally:
        engine.close()
    assert str(failure.value) == ("image qemu-series (nfcl/qemu-series:p-1) failed at its first step: its /opt/qemu "
                                  "is larger than 1 MiB, the most the lab reads of a series build's output; log: "
                                  "/logs/p.log")
    assert engine.asked == ["path=%2Fopt%2Fqemu"]


@pytest.mark.parametrize("archive", [None, Archive(lambda: iter([b"\0" * 4096]), short_by=512)],
                         ids=["refused", "cut-short"])
def test_a_build_containers_output_the_engine_fails_to_give_is_an_image_build_error(archive: Archive | None) -> None:
    """What goes wrong on the way while a build container's /opt/qemu is read is the lab's own error,
    keeping the engine's words, never the transport's exception."""
    engine = ArchiveEngine(archive)
    try:
        with pytest.raises(building.BuildRequestFailed) as failure:
            b"".join(building.BuildContainer(engine.container()).archive("/opt/qemu"))
    finally:
        engine.close()
    assert isinstance(failure.value, ImageBuildError)
    if archive is None:
        assert failure.value.explanation == "No such container:path", failure.value.explanation
