"""Faults injected at a phase of a real scenario: the verdict is `error` with the reason, never a
`gap` or `continuous` that would blame (or clear) the filter for what the lab itself broke."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import docker
import pytest

from lab import images
from lab.config import LabConfig
from lab.engine import LabHosts, resources
from lab.errors import ScenarioError
from lab.results.verdict import Verdict
from lab.runner import Cell, CellFinished, Runner
from lab.vm.accel import AccelChoice
from lab.vm.qemu import MachineSpec, Qemu

pytestmark = pytest.mark.e2e

Fault = Callable[[LabHosts], None]


def kill(process: str) -> Fault:
    def fault(hosts: LabHosts) -> None:
        pid = hosts.secondary.path(f"{process}.pid").read_text().strip()
        hosts.secondary.check(["kill", "-KILL", pid])
    return fault


def cut_lab_network(hosts: LabHosts) -> None:
    assert hosts.network is not None
    hosts.network.disconnect(hosts.secondary.container, force=True)


@pytest.mark.parametrize(("phase", "fault", "reason"), [
    ("hold", kill("qemu"), "migrat"),
    ("migrate", cut_lab_network, "migrat"),
    ("hold", kill("recorder"), "recorder"),
], ids=["secondary-qemu-killed-in-pre-switchover", "network-cut-during-migration", "recorder-killed"])
def test_fault_gives_an_error_verdict_with_its_reason(phase: str, fault: Fault, reason: str, lab_config: LabConfig,
                                                      lab_docker: docker.DockerClient, lab_runner: Runner,
                                                      lab_images: dict[str, images.ImageSet], lab_out: Path) -> None:
    # Short bounds: a fault must end the scenario quickly, with the last state seen.
    cfg = dataclasses.replace(lab_config, timeouts=dataclasses.replace(
        lab_config.timeouts, pre_switchover_s=8, completion_s=8, drain_s=3))
    profile = cfg.profiles[next(iter(lab_images))]
    injected: list[str] = []

    def on_phase(name: str, hosts: LabHosts) -> None:
        if name == phase:
            fault(hosts)
            injected.append(name)

    # The session's images and accelerator, with this test's shorter bounds.
    runner = Runner(cfg, lab_runner.engine, builds=lab_runner.builds, accel=lab_runner.accel)
    started = time.monotonic()
    result = runner.run_cell(Cell(profile, cfg.scenarios["redirector"]), lab_out, hook=on_phase)
    elapsed = time.monotonic() - started
    assert injected == [phase]
    assert result.verdict == Verdict.ERROR, f"{result.verdict}: {result.why}"
    assert reason in result.why, result.why
    assert not result.match
    assert elapsed < 8 + 8 + 3 + cfg.timeouts.boot_s, f"took {elapsed:.0f} s"
    assert not resources.find(lab_docker, cfg.name, ns=runner.ns), "the cell left something"


def test_a_guest_that_never_brings_eth0_up_is_caught(lab_hosts: LabHosts, lab_accel: AccelChoice,
                                                    lab_config: LabConfig) -> None:
    spec = MachineSpec(name="primary", accel=lab_accel.accel, memory_mb=lab_config.guest.memory_mb,
                       mac=lab_config.guest.mac, nic=False)
    with Qemu(lab_hosts.primary, spec) as qemu:
        qemu.launch(lab_config.timeouts.boot_s)
        started = time.monotonic()
        with pytest.raises(ScenarioError, match="did not bring eth0 up"):
            qemu.wait_guest_ready(lab_config.timeouts.boot_s)
        assert time.monotonic() - started < lab_config.timeouts.boot_s


def test_a_timeline_that_cannot_be_drawn_is_a_note_and_the_matrix_goes_on(
        lab_config: LabConfig, lab_docker: docker.DockerClient, lab_runner: Runner,
        lab_images: dict[str, images.ImageSet], tmp_path: Path) -> None:
    profile = lab_config.profiles[next(iter(lab_images))]
    cells = [Cell(profile, lab_config.scenarios[name]) for name in ("redirector", "mirror")]
    blocked: list[Path] = []

    def on_phase(name: str, hosts: LabHosts) -> None:
        if name == "traffic" and not blocked:  # the first cell's picture has a folder in its place
            blocked.append(hosts.rundir / "timeline.png")
            blocked[0].mkdir()

    runner = Runner(lab_config, lab_runner.engine, builds=lab_runner.builds, accel=lab_runner.accel)
    with contextlib.closing(runner.run(cells, tmp_path / "out", hook=on_phase)) as events:
        rows = [e.row for e in events if isinstance(e, CellFinished)]
    assert blocked, "no cell reached its traffic: nothing was tested"
    assert [r.verdict for r in rows] == [c.expected for c in cells], [r.why for r in rows]
    assert any(why.startswith("the timeline was not drawn: IsADirectoryError") for why in rows[0].reasons or []), \
        rows[0].reasons
    assert not any("timeline" in why for why in rows[1].reasons or [])
    assert not resources.find(lab_docker, lab_config.name, ns=runner.ns)


def test_a_starved_source_gives_no_false_verdict(lab_config: LabConfig, lab_docker: docker.DockerClient,
                                                 lab_runner: Runner, lab_images: dict[str, images.ImageSet],
                                                 lab_out: Path) -> None:
    """The overload made on purpose: the destination host gets a twentieth of a core from the hold
    on, so its QEMU delivers the frames it holds slower than the drain waits. The redirector is
    continuous; a starved cell must not say gap."""
    cfg = dataclasses.replace(lab_config, timeouts=dataclasses.replace(lab_config.timeouts, drain_s=2))
    profile = cfg.profiles[next(iter(lab_images))]
    throttled: list[str] = []

    def on_phase(name: str, hosts: LabHosts) -> None:
        if name == "hold":
            hosts.secondary.container.update(cpu_period=100000, cpu_quota=15000)
            throttled.append(name)

    runner = Runner(cfg, lab_runner.engine, builds=lab_runner.builds, accel=lab_runner.accel)
    cell = Cell(profile, cfg.scenarios["redirector"])
    result = runner.run_cell(cell, lab_out, hook=on_phase)
    assert throttled
    assert result.verdict in (cell.expected, Verdict.ERROR), f"{result.verdict}: {result.why}"
    print(f"starved cell: {result.verdict}: {result.why}")
    assert not resources.find(lab_docker, lab_config.name, ns=runner.ns)
