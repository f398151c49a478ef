"""Lab hosts made and removed for real: a creation that fails half-way leaves nothing of the lab,
and touches nothing the lab did not make."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import docker
import pytest

from lab import images
from lab.config import LabConfig, Limits
from lab.engine import Engine, HostSpec, LabHosts, remote, resources
from lab.engine.remote import ArchiveError
from lab.errors import LabError
from lab.host import RUNDIR
from lab.namespace import Namespace
from lab.results import artefacts

pytestmark = pytest.mark.e2e


def test_a_secondary_that_cannot_start_leaves_no_primary_and_no_network(
        lab_config: LabConfig, lab_engine: Engine, lab_docker: docker.DockerClient,
        lab_images: dict[str, images.ImageSet], tmp_path: Path) -> None:
    ns = Namespace.new_run(lab_config.name)
    runtime = next(iter(lab_images.values())).runtime
    # Someone else's container holds the secondary's name: the lab's second creation fails.
    squatter = lab_docker.containers.run(runtime, name=ns.name("secondary"), detach=True, network_mode="none")
    rundir = artefacts.new_rundir(ns)
    try:
        with pytest.raises(LabError, match="cannot start the secondary host") as failure:
            with LabHosts(lab_engine, HostSpec(image=runtime, ns=ns), rundir, 30):
                pytest.fail("the hosts came up although the secondary's name was taken")
        assert "\n" not in str(failure.value)
        assert not resources.find(lab_docker, lab_config.name, ns=ns), "the primary or the network stayed"
        squatter.reload()
        assert squatter.status == "running", "the lab removed a container it did not make"
    finally:
        squatter.remove(force=True)
        artefacts.move_to(rundir, tmp_path / "rundir")


def test_an_engine_without_the_hosts_device_is_named_with_what_to_do(
        lab_config: LabConfig, lab_engine: Engine, lab_docker: docker.DockerClient,
        lab_images: dict[str, images.ImageSet], tmp_path: Path) -> None:
    """The engine's daemon itself refuses a device its machine does not have (/dev/net/tun cannot be
    taken away from this machine, so the hosts ask for one that is not there)."""
    ns = Namespace.new_run(lab_config.name)
    runtime = next(iter(lab_images.values())).runtime
    missing = "/dev/net/nfcl-no-such-tun"
    rundir = artefacts.new_rundir(ns)
    try:
        with pytest.raises(LabError) as failure:
            with LabHosts(lab_engine, HostSpec(image=runtime, ns=ns, devices=(missing,)), rundir, 30):
                pytest.fail(f"the hosts came up without {missing}")
        message = str(failure.value)
        assert "\n" not in message
        assert message.startswith(f"engine {lab_engine.name} has no {missing}, which every lab host needs")
        assert "modprobe nfcl-no-such-tun" in message and "no such file or directory" in message
        assert not resources.find(lab_docker, lab_config.name, ns=ns), "a host or the network stayed"
    finally:
        artefacts.move_to(rundir, tmp_path / "rundir")


def test_a_truncated_archive_of_a_copied_run_folder_is_an_error_and_nothing_stays(
        lab_config: LabConfig, lab_docker: docker.DockerClient, lab_images: dict[str, images.ImageSet],
        tmp_path: Path) -> None:
    """Hosts on an engine taken as one that copies run folders; the engine's archive of each folder
    comes back cut in half (as a dropped connection leaves it)."""
    ns = Namespace.new_run(lab_config.name)
    runtime = next(iter(lab_images.values())).runtime
    engine = Engine(lab_docker, "local", sees_files=False)
    rundir = artefacts.new_rundir(ns)
    hosts = LabHosts(engine, HostSpec(image=runtime, ns=ns), rundir, 30)
    try:
        with pytest.raises(ArchiveError) as failure:
            with hosts:
                for host in hosts.hosts.values():
                    assert not host.shares_rundir
                    caps = host.container.attrs["HostConfig"]
                    assert (caps["Memory"], caps["PidsLimit"]) == (Limits.host_memory_mb << 20, Limits.host_pids)
                    host.write_text("record.json", "{}" * 4000)
                    real = host.container.get_archive

                    def cut(path: str, *args: object, real: Any = real, **kwargs: object) -> tuple[Any, Any]:
                        stream, stat = real(path, *args, **kwargs)
                        data = b"".join(stream)
                        return iter([data[:len(data) // 2]]), stat

                    host.container.get_archive = cut
        assert "archive of /run/lab was refused: ReadError" in str(failure.value), failure.value
        assert "\n" not in str(failure.value)
        assert not resources.find(lab_docker, lab_config.name, ns=ns), "a host or the network stayed"
    finally:
        resources.remove(lab_docker, lab_config.name, ns=ns)
        artefacts.move_to(rundir, tmp_path / "rundir")


def test_a_copying_engines_host_sends_what_a_file_gained_and_a_folder_past_the_cap_is_an_error(
        lab_config: LabConfig, lab_docker: docker.DockerClient, lab_images: dict[str, images.ImageSet],
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hosts on an engine taken as one that copies run folders: a growing file is read a piece at a
    time, its bytes as they are; a run folder past the cap (64 KiB here) is the one-line error, and
    the hosts and network go all the same."""
    ns = Namespace.new_run(lab_config.name)
    runtime = next(iter(lab_images.values())).runtime
    engine = Engine(lab_docker, "local", sees_files=False)
    rundir = artefacts.new_rundir(ns)
    monkeypatch.setattr(remote, "fetch_folder", functools.partial(remote.fetch_folder, limit=64 * 1024))
    try:
        with pytest.raises(ArchiveError) as failure:
            with LabHosts(engine, HostSpec(image=runtime, ns=ns), rundir, 30) as hosts:
                host = hosts.hosts["secondary"]
                assert not host.shares_rundir
                host.check(["sh", "-c", f"printf abc > {RUNDIR}/grows"])
                assert host.read_from("grows", 0, 100) == b"abc"
                host.check(["sh", "-c", f"head -c 100000 /dev/urandom >> {RUNDIR}/grows"])
                gained = host.read_from("grows", 3, 2**20)
                assert gained == host.path("grows").read_bytes()[3:] and len(gained) == 100000
                assert host.read_from("grows", 3, 10) == gained[:10]
                assert host.read_from("grows", 100003, 10) == host.read_from("none", 0, 10) == b""
        assert str(failure.value) == ("the engine's archive of /run/lab is larger than 64 KiB, the most the lab "
                                      "reads of one archive from an engine"), failure.value
        assert not resources.find(lab_docker, lab_config.name, ns=ns), "a host or the network stayed"
    finally:
        resources.remove(lab_docker, lab_config.name, ns=ns)
        artefacts.move_to(rundir, tmp_path / "rundir")
