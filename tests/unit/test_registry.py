"""lab.engine.registry without an engine: the names an image has in a registry, and what the engine's
answers say (the messages are Docker 20.10's and distribution 2.8's, as measured here)."""

from __future__ import annotations

import pytest

from lab.engine.registry import Registry, RegistryError, _kind, _split

REGISTRY = Registry("127.0.0.1:5015/lab", 60.0)


def test_an_image_keeps_its_tag_under_the_registrys_path() -> None:
    remote = REGISTRY.remote("nfcl/runtime:baseline-8a5a64a8b894")
    assert remote == "127.0.0.1:5015/lab/nfcl/runtime:baseline-8a5a64a8b894"
    assert _split(REGISTRY.remote("nfcl/qemu:aeabed9cf244")) == ("127.0.0.1:5015/lab/nfcl/qemu", "aeabed9cf244")
    assert REGISTRY.host == "127.0.0.1:5015"


@pytest.mark.parametrize(("answer", "kind"), [
    ("manifest for 127.0.0.1:5015/lab/nfcl/runtime:nothing not found: manifest unknown: manifest unknown", "missing"),
    ('Get "http://127.0.0.1:5099/v2/": dial tcp 127.0.0.1:5099: connect: connection refused', "unreachable"),
    ('Get "https://nowhere.invalid/v2/": dial tcp: lookup nowhere.invalid: no such host', "unreachable"),
    ('Head "http://127.0.0.1:5016/v2/lab/x/manifests/y": no basic auth credentials', "refused"),
    ("unauthorized: authentication required", "refused"),
    ("denied: permission_denied: write_package", "denied"),
    ('Head "https://ghcr.io/v2/owner/none/manifests/x": denied', "denied"),  # GitHub's, for no such package
    ("received unexpected HTTP status: 500 Internal Server Error", ""),
])
def test_what_an_engines_answer_says(answer: str, kind: str) -> None:
    assert _kind(answer) == kind


@pytest.mark.parametrize(("answer", "says"), [
    ("unauthorized: authentication required", "the credentials were refused"),
    ("denied: permission_denied: write_package", "the credentials were refused"),
    ('Get "http://127.0.0.1:5099/v2/": dial tcp 127.0.0.1:5099: connect: connection refused', "unreachable"),
])
def test_each_registry_error_is_one_line_saying_what_to_do(answer: str, says: str) -> None:
    error = REGISTRY._error("push", REGISTRY.remote("nfcl/base:x"), "local", answer)
    assert isinstance(error, RegistryError)
    text = str(error)
    assert says in text and "\n" not in text and text.startswith("registry 127.0.0.1:5015/lab (push of ")
    assert ("docker login 127.0.0.1:5015" in text) == (says == "the credentials were refused")
