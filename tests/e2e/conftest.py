"""What every end-to-end test shares: tests of one ``xdist_group`` never run at once.

pytest-xdist's ``--dist loadgroup`` should send a group to one worker; with pytest 9.2 and
pytest-xdist 3.8 the workers' node ids come without the group's suffix and a group is spread over
workers. So the tests that take the second engine down, or rebuild shared images, hold a lock of
their group for their whole run, whichever worker has them.
"""

from __future__ import annotations

import contextlib
import fcntl
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

LOCK_WAIT_S = 3600.0  # a group's other tests, each bounded by its own timeouts, run first


@pytest.fixture(autouse=True)
def _one_at_a_time_per_group(request: pytest.FixtureRequest) -> Iterator[None]:
    groups = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                     for m in request.node.iter_markers("xdist_group")})
    with contextlib.ExitStack() as held:
        for group in groups:
            lock = held.enter_context((Path(tempfile.gettempdir()) / f"nfcl-test-group-{group}.lock").open("w"))
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
