"""`lab bench` for real, reduced: one scenario, the matrix with --jobs 1 only, the series rebuild.
It checks that every figure is there, not how large any is: no test asserts a time."""

from __future__ import annotations

import json
from pathlib import Path

import docker
import pytest

from lab import cli, images
from lab.config import LabConfig
from lab.engine import Engine, resources

# It builds a series image: with the other image builds under pytest-xdist.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("image-builds")]


def test_a_reduced_bench_writes_every_figure(lab_config: LabConfig, lab_images: dict[str, images.ImageSet],
                                             lab_docker: docker.DockerClient, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    profile = next(iter(lab_images))
    out = tmp_path / "bench"
    rc = cli.main(["bench", "--config", str(lab_config.path), "--profile", profile, "--scenario", "redirector",
                   "--jobs", "1", "--out", str(out)])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    assert "series rebuild after a one-file change" in printed.out and "bench.json" in printed.out
    bench = json.loads((out / "bench.json").read_text())
    assert bench["cold_build"] is None  # only with --cold
    rebuild = bench["series_rebuild"]
    assert rebuild["seconds"] > 0 and any("/qemu-series:" in tag for tag in rebuild["images"])
    in_container = [s["step"] for s in rebuild["steps"] if s["step"].startswith("container ")]
    assert in_container == ["container 1/2", "container 2/2"]
    assert bench["scenario"]["cell"] == f"{profile}-redirector"
    assert set(bench["scenario"]["timings"]) >= {"boot", "migrate", "hold", "drain", "total"}
    assert [(m["jobs"], m["cells"]) for m in bench["matrix"]] == [(1, 1)]
    for role in ("primary", "secondary"):
        assert bench["memory"][role]["container_mb"] > 0, bench["memory"]
        assert bench["memory"][role]["qemu_vmhwm_mb"] > 0, bench["memory"]
    # The runs' own reports land beside bench.json; the series images the bench made are gone again,
    # and so is every container of its run.
    assert (out / "scenario" / "report.json").is_file() and (out / "matrix-jobs1" / "report.json").is_file()
    assert not lab_docker.images.list(filters={"label": "io.nfcl.profile=bench-series"})
    assert not lab_docker.containers.list(all=True, filters={"label": f"{resources.RUN}={bench['run']}"})


def test_a_container_gone_since_it_was_listed_has_no_figures(lab_engine: Engine) -> None:
    """The memory sampler lists a run's hosts, then reads each: one removed in between has no figures
    (not an SDK exception escaping its thread)."""
    assert lab_engine.stats("nfcl-no-such-container") == {}
    assert lab_engine.output_of("nfcl-no-such-container", ["cat", "/proc/self/status"]) == b""
