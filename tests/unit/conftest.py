"""Fixtures shared by the unit tests."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest


@pytest.fixture
def only_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy, and any connection to an address other than a loopback one (127.0.0.0/8) fails the test."""
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    real = socket.create_connection

    def loopback_only(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        if not _is_loopback(address[0]):
            raise AssertionError(f"a test tried to connect to {address!r}")
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", loopback_only)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback and ipaddress.ip_address(host).version == 4
    except ValueError:  # a name: it would be looked up
        return False
