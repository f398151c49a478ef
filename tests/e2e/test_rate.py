"""At 10000 frames/s the destination's net queue (10000 packets while it waits to run) overflows:
a true finding about QEMU, kept visible as lost_at.destination, which an expectation may accept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab import cli, images
from lab.config import LabConfig
from tests.e2e.rundirs import config_copy

pytestmark = pytest.mark.e2e
RATE = 10000


def test_a_full_destination_queue_is_a_loss_at_the_destination_that_may_be_accepted(
        lab_config: LabConfig, lab_images: dict[str, images.ImageSet], tmp_path: Path) -> None:
    profile = next(iter(lab_images))
    text = lab_config.path.read_text()
    fast = text.replace("  rate: 1000 ", f"  rate: {RATE} ", 1)
    accepting = fast.replace("    filter: filter-redirector\n    expect:",
                             "    filter: filter-redirector\n    accept_loss: [destination]\n    expect:", 1)
    assert fast != text and accepting != fast, "lab.yaml's rate or redirector scenario is not where this test looks"
    out = tmp_path / "run"
    cli.main(["run", "--config", str(config_copy(lab_config.path, tmp_path / "cfg", accepting)),
              "--profile", profile, "--scenario", "redirector", "--out", str(out)])
    [row] = json.loads((out / "report.json").read_text())["results"]
    where = f"{row['reasons']}; {row['artefacts']}"
    print(f"\n{RATE} frames/s asked: the generator kept {row['generator_fps']}/s; sent {row['frames_sent']}, "
          f"on the stream {row['frames_captured']}, out of the destination's tap {row['frames_delivered']}; "
          f"lost_at {row['lost_at']}")
    assert row["generator_fps"] > 0.8 * RATE, where
    # The stream kept everything; the destination delivered what its queue held, and no more.
    assert row["lost_at"]["stream"] == 0 and row["frames_captured"] == row["frames_sent"], where
    assert row["lost_at"]["destination"] > 0 and row["frames_delivered"] < row["frames_captured"], where
    assert row["verdict"] == "continuous", where
    assert row["reasons"] and all(r.startswith("accepted, lost at destination: ") for r in row["reasons"]), where
