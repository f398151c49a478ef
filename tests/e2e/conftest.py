"""What every end-to-end test shares: tests of one ``xdist_group`` never run at once.

pytest-xdist's ``--dist loadgroup`` should send a group to one worker; with pytest 9.2 and
pytest-xdist 3.8 the workers' node ids come without the group's suffix and a group is spread over
workers. So the tests that take the second engine down, or rebuild shared images, hold their group's
run-wide lock (the lab plugin's, which ``lab_images`` holds while it builds) for their whole run,
whichever worker has them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from lab.pytest_plugin import held, need
from tests.e2e import wheel


@pytest.fixture(autouse=True)
def _one_at_a_time_per_group(request: pytest.FixtureRequest) -> Iterator[None]:
    groups = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                     for m in request.node.iter_markers("xdist_group")})
    with contextlib.ExitStack() as stack:
        for group in groups:
            stack.enter_context(held(request, group))
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


@pytest.fixture(scope="session")
def wheel_venv(lab_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv of its own with the lab's wheel installed (not the editable install)."""
    return wheel.install(lab_wheel, tmp_path_factory.mktemp("venv"))
