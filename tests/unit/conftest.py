"""Fixtures shared by the unit tests."""

from __future__ import annotations

import socket
from typing import Any

import pytest


@pytest.fixture
def only_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy, and any connection to an address other than 127.0.0.1 fails the test."""
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    real = socket.create_connection

    def loopback_only(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        if address[0] != "127.0.0.1":
            raise AssertionError(f"a test tried to connect to {address!r}")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", loopback_only)
