"""What every end-to-end test shares: tests of one ``xdist_group`` never run at once.

pytest-xdist's ``--dist loadgroup`` should send a group to one worker; with pytest 9.2 and
pytest-xdist 3.8 the workers' node ids come without the group's suffix and a group is spread over
workers. So the tests that take the second engine down, or rebuild shared images, hold a lock of
their group for their whole run, whichever worker has them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from lab.pytest_plugin import need
from tests.e2e import wheel

LOCK_WAIT_S = 3600.0  # a group's other tests, each bounded by its own timeouts, run first


def _lock_folder(factory: pytest.TempPathFactory) -> Path:
    """The test run's own temporary folder, which pytest keeps or drops like its others: under
    xdist every worker's is a folder in one the run's workers share."""
    base = factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(autouse=True)
def _one_at_a_time_per_group(request: pytest.FixtureRequest,
                             tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    groups = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                     for m in request.node.iter_markers("xdist_group")})
    with contextlib.ExitStack() as held:
        for group in groups:
            lock = held.enter_context((_lock_folder(tmp_path_factory) / f"group-{group}.lock").open("w"))
            deadline = time.monotonic() + LOCK_WAIT_S
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        pytest.fail(f"the test group {group} stayed locked for {LOCK_WAIT_S:.0f} s")
                    time.sleep(0.5)
        yield


@pytest.fixture(scope="module")
def second_engine() -> docker.DockerClient:
    """The engine scripts/second-engine makes on this machine, reached as lab.yaml's engines reach it."""
    try:
        client = docker.DockerClient(base_url="ssh://nfcl-engine2:2222", use_ssh_client=False, timeout=60)
        client.ping()
    except Exception as exc:  # noqa: BLE001 (any failure means: not there)
        need(f"the second engine does not answer ({exc}); start it with scripts/second-engine up")
        raise
    return client


@pytest.fixture(scope="session")
def lab_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The lab's wheel, built once per test run."""
    return wheel.build(tmp_path_factory.mktemp("wheel"))
