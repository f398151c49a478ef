"""lab.engine.transport against real clients of engines that are not there: what a request that
cannot be answered becomes, and how often it is sent."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import docker
import docker.errors
import pytest

from lab.config import EngineSpec
from lab.engine import transport
from lab.errors import EngineError, EngineUnreachable, LabError

T = TypeVar("T")


@pytest.fixture
def nowhere(tmp_path: Path) -> docker.DockerClient:
    # A version given: the SDK then asks the engine nothing until the first request.
    return docker.DockerClient(base_url=f"unix://{tmp_path}/no-engine.sock", version="1.41", timeout=5)


def counted(request: Callable[[], T]) -> tuple[list[int], Callable[[], T]]:
    """``request`` and the list that grows by one each time it is sent."""
    sent: list[int] = []

    def send() -> T:
        sent.append(1)
        return request()

    return sent, send


def test_a_request_no_engine_answers_is_sent_once_more_then_is_the_labs_error(nowhere: docker.DockerClient) -> None:
    sent, send = counted(nowhere.ping)
    with pytest.raises(EngineError) as failure:
        transport.call(nowhere, send, lambda exc: EngineError("local", f"cannot answer: {transport.why(exc)}"))
    assert len(sent) == 2, "a request left unanswered is sent again, once"
    assert str(failure.value).startswith("engine local cannot answer: ") and "\n" not in str(failure.value)
    assert isinstance(failure.value.__cause__, transport.TRANSPORT_ERRORS)


def test_a_request_that_may_not_run_twice_is_sent_once(nowhere: docker.DockerClient) -> None:
    sent, send = counted(lambda: nowhere.networks.create("nfcl-never"))
    with pytest.raises(LabError):
        transport.call(nowhere, send, lambda exc: LabError(transport.why(exc)), resend=False)
    assert len(sent) == 1


def test_not_found_is_an_answer_not_a_failure(nowhere: docker.DockerClient) -> None:
    def missing() -> None:
        raise docker.errors.NotFound("no such image")

    with pytest.raises(transport.NotFound):
        transport.call(nowhere, missing, lambda exc: LabError(str(exc)))


@pytest.mark.parametrize("url", ["tcp://127.0.0.1:1", "ssh://root@127.0.0.1:1"])
def test_an_engine_that_does_not_answer_is_one_line_naming_it(url: str) -> None:
    with pytest.raises(EngineUnreachable) as failure:
        transport.dial(EngineSpec("second", url))
    line = str(failure.value)
    assert line.startswith(f"engine second ({url}) does not answer: ") and "\n" not in line
    assert line.endswith("is its daemon up (scripts/second-engine status)?")
