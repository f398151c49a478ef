"""The guest's own view through a whole migration, and migrations between builds (`lab run --to`).

test_continuity runs every guest scenario on every build; here: what only a migration between two
builds or a busy guest shows.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab import cli, images
from lab.config import LabConfig
from lab.pytest_plugin import RunScenario
from tests.e2e.rundirs import config_copy

pytestmark = pytest.mark.e2e


def rows(out: Path) -> list[dict[str, object]]:
    return list(json.loads((out / "report.json").read_text())["results"])


@pytest.mark.parametrize(("source", "destination"), [("baseline", "control"), ("control", "baseline")])
def test_to_runs_the_destination_on_another_build(source: str, destination: str, lab_config: LabConfig,
                                                  lab_images: dict[str, images.ImageSet], tmp_path: Path) -> None:
    if {source, destination} - set(lab_images):
        pytest.skip(f"needs both {source} and {destination} (--lab-profile selects fewer)")
    out = tmp_path / "run"
    rc = cli.main(["run", "--config", str(lab_config.path), "--profile", source, "--to", destination,
                   "--scenario", "mirror", "--scenario", "guest-redirect-early", "--out", str(out)])
    results = rows(out)
    assert [(r["source_profile"], r["destination_profile"]) for r in results] == [(source, destination)] * 2
    for r in results:
        # The secondary ran the other build's image: the cell is the pair, not the source's build twice.
        assert r["images"] == {"primary": lab_images[source].runtime, "secondary": lab_images[destination].runtime}
        pair = f"{source}->{destination}"
        assert r["expected"] == lab_config.scenarios[str(r["scenario"])].expect[pair]
        assert r["verdict"] == r["expected"], (r["scenario"], r["reasons"], r["artefacts"])
        assert Path(str(r["artefacts"])).name == f"{source}-to-{destination}-{r['scenario']}"
    # The source's filter-mirror decides the stream; the guest is delivered everything by either.
    mirror, early = results
    assert mirror["verdict"] == ("gap" if source == "baseline" else "continuous")
    assert early["guest_lost"] == 0 and early["guest_frames_after_resume"]
    assert rc == 0


def test_a_busy_guest_makes_the_migration_iterate(lab_config: LabConfig, lab_images: dict[str, images.ImageSet],
                                                  tmp_path: Path, run_scenario: RunScenario) -> None:
    """guest.dirty_mb_s: the guest dirties memory while it migrates; QEMU measures the rate and
    iterates over RAM more often than for the idle guest."""
    profile = next(iter(lab_images))
    idle = run_scenario(profile, "guest-plain")
    text = lab_config.path.read_text()
    busy_text = text.replace('  dirty_mb_s: 0 ', '  dirty_mb_s: 64 ', 1)
    assert busy_text != text, "lab.yaml's guest.dirty_mb_s is not where this test looks for it"
    out = tmp_path / "busy"
    cli.main(["run", "--config", str(config_copy(lab_config.path, tmp_path / "cfg", busy_text)),
              "--profile", profile, "--scenario", "guest-plain", "--out", str(out)])
    [busy] = rows(out)
    print(f"\nidle guest: {idle.ram_iterations} RAM passes, dirty rate {idle.dirty_rate_mb_s} MiB/s; "
          f"busy guest (64 MiB/s): {busy['ram_iterations']} passes, {busy['dirty_rate_mb_s']} MiB/s")
    assert busy["verdict"] == idle.verdict == "gap", busy["reasons"]
    assert isinstance(busy["dirty_rate_mb_s"], float) and idle.dirty_rate_mb_s is not None
    assert busy["dirty_rate_mb_s"] > idle.dirty_rate_mb_s
    assert isinstance(busy["ram_iterations"], int) and idle.ram_iterations is not None
    assert busy["ram_iterations"] > idle.ram_iterations
