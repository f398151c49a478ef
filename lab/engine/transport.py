"""How the lab speaks to an engine: its client dialled (the local socket, tcp:// or ssh://), the
transport's errors turned into the lab's, and the one retry that a refused session, a dropped
connection or a request left unanswered earns.

Over ssh:// every request the Docker SDK sends runs in a session of one SSH connection (paramiko),
and the engine's sshd refuses sessions beyond its MaxSessions (10 by default) while others are open.
The SDK keeps idle connections, each a session, in a pool per request URL (one per container, one
per exec): a few dozen requests would hold every session the sshd grants. The lab's client keeps one
pool for every URL, of at most ``IDLE_SESSIONS`` (its adapter is the SDK's own, asked for one pool
through the adapter's public ``get_connection``), so idle sessions never pile up. A burst
beyond what the sshd grants (a teardown removing containers at once, cells side by side) can still
meet a refusal a moment before sessions close; a refused session carried nothing, so the request is
sent again, for every kind of request, even one that creates something.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
import paramiko
import requests.exceptions
from docker.transport import SSHHTTPAdapter

from lab.config import EngineSpec
from lab.errors import DockerUnavailable, EngineRefused, EngineUnreachable, LabError, ScenarioError
from lab.waiting import Deadline, pause

T = TypeVar("T")

# Everything a request to an engine can raise on the way, whichever transport carried it.
TRANSPORT_ERRORS = (docker.errors.DockerException, requests.exceptions.RequestException, paramiko.SSHException,
                    OSError, EOFError)
NotFound = docker.errors.NotFound
IDLE_SESSIONS = 4  # idle SSH sessions one engine's client keeps for its next requests
ONE_POOL = "http+docker://ssh"  # the key of that one pool
SESSION_WAIT = 30.0  # seconds a refused SSH session is asked for again
UNANSWERED_PAUSE = 0.5  # before a request the far end hung up on is sent again


def why(exc: BaseException) -> str:
    """The transport's own words for what went wrong, in one line (the daemon's explanation first)."""
    explanation = getattr(exc, "explanation", None)
    text = str(explanation or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def dial(spec: EngineSpec) -> docker.DockerClient:
    """The client of a lab.yaml `engines:` entry (the machine's own engine when it has no URL),
    once it answers; every way of failing is an EngineError naming it."""
    if not spec.url:
        try:
            client = docker.from_env(timeout=120)
            client.ping()
        except docker.errors.DockerException as exc:
            raise DockerUnavailable(spec.name, why(exc), "start it with `dockerd &` as root (or `make setup`), "
                                    "then run `lab doctor`") from exc
        return client
    where, url = f"{spec.name} ({spec.url})", ssh_url(spec.url)
    try:
        client = docker.DockerClient(base_url=url, timeout=120, use_ssh_client=False, max_pool_size=IDLE_SESSIONS)
        if url.startswith("ssh://"):
            _one_pool(client, url)
        client.ping()
    except paramiko.SSHException as exc:
        raise _ssh_trouble(where, exc) from exc
    except (docker.errors.DockerException, OSError, EOFError) as exc:
        raise EngineUnreachable(where, f"does not answer: {why(exc)}",
                                "is its daemon up (scripts/second-engine status)?") from exc
    return client


class _OnePool(SSHHTTPAdapter):
    """The SDK's ssh:// adapter, keeping one pool of idle sessions for every request URL."""

    def get_connection(self, url: str | bytes, proxies: Mapping[str, str] | None = None) -> Any:
        return super().get_connection(ONE_POOL, proxies)


def _one_pool(client: docker.DockerClient, url: str) -> None:
    """``client``'s ssh:// requests through an adapter of ``_OnePool``, mounted where the SDK mounted
    its own (requests' public mount), which goes with the SSH connection it made."""
    own = client.api.get_adapter(client.api.base_url)
    client.api.mount(client.api.base_url, _OnePool(url, timeout=120, pool_connections=1,
                                                   max_pool_size=IDLE_SESSIONS))
    own.close()


def _ssh_trouble(where: str, exc: paramiko.SSHException) -> EngineRefused:
    text = str(exc)
    if "known_hosts" in text:
        return EngineRefused(where, f"SSH failed: {text}", "the host key is not known here and is never accepted "
                             "silently: check it, then add it to ~/.ssh/known_hosts")
    if isinstance(exc, paramiko.AuthenticationException) or "authentication" in text.lower():
        return EngineRefused(where, f"SSH refused the login ({text})", "give an IdentityFile for that host in "
                             "~/.ssh/config")
    return EngineRefused(where, f"SSH failed: {text}")


def ssh_url(url: str) -> str:
    """An ssh:// URL with the port ~/.ssh/config gives its host, when it names none: the Docker SDK
    would take 22, while it takes identity and host name from that same file."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme != "ssh" or parsed.port is not None or not parsed.hostname:
        return url
    config = Path("~/.ssh/config").expanduser()
    if not config.is_file():
        return url
    ssh_config = paramiko.SSHConfig()
    with config.open() as f:
        ssh_config.parse(f)
    port = ssh_config.lookup(parsed.hostname).get("port")
    return f"{url}:{port}" if port else url


def _ssh_connection(client: docker.DockerClient) -> paramiko.Transport | None:
    """The SSH connection an ssh:// client sends its requests through (None for any other client):
    the adapter requests mounted for the client's URL, and its paramiko client, both public."""
    adapter = client.api.get_adapter(client.api.base_url)
    ssh_client = getattr(adapter, "ssh_client", None)
    return ssh_client.get_transport() if isinstance(ssh_client, paramiko.SSHClient) else None


def call(client: docker.DockerClient, request: Callable[[], T],
         fail: Callable[[BaseException], LabError | ScenarioError], resend: bool = True) -> T:
    """``request()``, sent again when the transport says it may be: a session the engine's sshd
    refused, until SESSION_WAIT; with ``resend`` (a request that may run twice), once more after a
    dropped SSH connection or a request the far end hung up on unanswered. When it cannot be
    answered, ``fail(the transport's error)`` is raised; NotFound is an answer, the caller's to read."""
    refusals = Deadline("a session on the engine's SSH connection", SESSION_WAIT)
    again = resend
    while True:
        try:
            return request()
        except docker.errors.NotFound:
            raise
        except paramiko.SSHException as exc:
            if _refused(client, exc) and not refusals.expired():
                refusals.sleep(0.2)
                continue
            if not (again and revive(client)):
                raise fail(exc) from exc
        except TRANSPORT_ERRORS as exc:
            if not (again and (revive(client) or _unanswered(exc))):
                raise fail(exc) from exc
        again = False


def _refused(client: docker.DockerClient, exc: paramiko.SSHException) -> bool:
    """A session the sshd refused on a connection that still stands. Refusals reach one of the
    threads opening sessions at once as ChannelException, the others as "Unable to open channel":
    paramiko keeps a single last error."""
    connection = _ssh_connection(client)
    return (connection is not None and connection.is_active()
            and not isinstance(exc, paramiko.AuthenticationException | paramiko.BadHostKeyException))


def revive(client: docker.DockerClient) -> bool:
    """Lets a dropped SSH connection go (True when it had dropped): the SDK's paramiko transport
    reconnects when it has no connection, not when the one it has died. Closed, the client dials
    the engine again at its next request, and objects made by it (containers) go on working."""
    connection = _ssh_connection(client)
    if connection is None or connection.is_active():
        return False
    client.close()
    return True


def _unanswered(exc: BaseException) -> bool:
    """A request that got no response at all: over ssh://, the far end's `docker system dial-stdio`
    can hang up before it answers; a moment later, sent again, it is answered."""
    if isinstance(exc, requests.exceptions.ConnectionError):
        pause(UNANSWERED_PAUSE, what="the engine to answer again")
        return True
    return False
