"""A host on an engine that does not see this machine's files (an engine on another machine).

Its run folder is a folder of the container's own: files are read and written through the Docker
API (``get_archive``/``put_archive``), the whole folder comes back into the lab's run folder when
the host goes, and each unix socket of it is reached through a relay: a unix socket in the lab's
run folder whose every connection is a ``docker exec`` of ``lab.agents.relay`` in the host,
spliced to it. Nothing is published, so what only the host's loopback offers (QMP, the guest's
record port) stays there; the relay goes wherever the engine's own API goes (over ssh://, inside
the SSH connection).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import tarfile
import tempfile
import threading
from pathlib import Path
from typing import Any, BinaryIO

import docker.errors
import paramiko
from docker.models.containers import Container
from docker.utils.socket import frames_iter

from lab import bounds
from lab.bounds import ENGINE_LIMIT
from lab.engine.transport import TRANSPORT_ERRORS  # noqa: E402 (after the imports it completes)
from lab.errors import ScenarioError, excerpt


class ArchiveError(ScenarioError):
    """What an engine sent for a host's files is no archive the lab takes (truncated, corrupt, or
    naming a path outside the run folder): the cell's error, one line."""


def fetch(container: Container, inside: str, local: Path, limit: int = ENGINE_LIMIT) -> bool:
    """The file ``inside`` the container, written to ``local``; False (and ``local`` gone) when the
    container has none."""
    with tempfile.TemporaryFile() as spool:
        try:
            _download(container, inside, spool, limit)
        except docker.errors.NotFound:
            local.unlink(missing_ok=True)
            return False
        return copy_file(spool, inside, local)


def _download(container: Container, inside: str, into: BinaryIO, limit: int) -> None:
    """The engine's archive of ``inside`` into ``into`` (a file: it may be large), at most ``limit`` bytes."""
    stream, _stat = container.get_archive(inside)
    if not bounds.copy(stream, into, limit):
        raise ArchiveError(bounds.past(f"the engine's archive of {inside.removesuffix('/.')}", limit,
                                       "of one archive from an engine"))
    into.seek(0)


def copy_file(data: bytes | BinaryIO, inside: str, local: Path) -> bool:
    """The first regular file of the archive ``data`` written to ``local``; False (and ``local``
    gone) when it has none."""
    archive = _seekable(data)
    try:
        with tarfile.open(fileobj=archive) as tar:
            member = next((m for m in tar if m.isfile()), None)
            extracted = tar.extractfile(member) if member is not None else None
            if extracted is not None:
                local.parent.mkdir(parents=True, exist_ok=True)
                with local.open("wb") as out:
                    shutil.copyfileobj(extracted, out)
            _whole(tar, archive)
    except (tarfile.TarError, EOFError) as exc:
        local.unlink(missing_ok=True)
        raise ArchiveError(_unreadable(inside, exc)) from exc
    if extracted is None:
        local.unlink(missing_ok=True)
    return extracted is not None


def fetch_folder(container: Container, inside: str, local: Path, limit: int = ENGINE_LIMIT) -> None:
    """Every regular file under ``inside``, into ``local`` (files the lab wrote there itself, such
    as the QMP transcript, are not in the container and stay as they are)."""
    with tempfile.TemporaryFile() as spool:
        _download(container, inside + "/.", spool, limit)
        extract_files(spool, inside, local)


def extract_files(data: bytes | BinaryIO, inside: str, local: Path) -> None:
    """The regular files of the archive ``data`` into ``local``; none lands outside it (the "data"
    filter refuses such a member, and links are not taken)."""
    archive = _seekable(data)
    try:
        with tarfile.open(fileobj=archive) as tar:
            files = [m for m in tar.getmembers() if m.isfile()]
            _whole(tar, archive)
            tar.extractall(local, members=files, filter="data")
    # OSError: names that clash (a file, then a folder of that name), which no engine's own archive has.
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ArchiveError(_unreadable(inside, exc)) from exc


def _seekable(data: bytes | BinaryIO) -> BinaryIO:
    return io.BytesIO(data) if isinstance(data, bytes) else data


def _whole(tar: tarfile.TarFile, archive: BinaryIO) -> None:
    """An archive cut at a member's boundary reads as a shorter one: only its end-of-archive marker
    (two zero blocks after the last member) says it is whole."""
    for _ in tar:  # to its end
        pass
    archive.seek(tar.offset)
    end = archive.read(2 * tarfile.BLOCKSIZE)
    if len(end) < 2 * tarfile.BLOCKSIZE or end.count(0) != len(end):
        raise tarfile.ReadError(f"truncated: no end-of-archive marker after {tar.offset} bytes")


def _unreadable(inside: str, exc: BaseException) -> str:
    return f"the engine's archive of {inside} was refused: {type(exc).__name__}: {excerpt(str(exc))}"


def put(container: Container, inside: str, data: bytes, mode: int = 0o644) -> None:
    """``data`` as the file ``inside`` the container (its folder must exist)."""
    folder, name = os.path.split(inside)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), mode
        tar.addfile(info, io.BytesIO(data))
    if not container.put_archive(folder, buffer.getvalue()):
        raise OSError(f"the engine did not take {inside}")


class SocketRelay:
    """A unix socket at ``local`` that reaches the one at ``inside`` the container, a ``docker exec``
    per connection. Closed with its host (``close``): no relay outlives the run."""

    def __init__(self, container: Container, inside: str, local: Path) -> None:
        self.container, self.inside, self.local = container, inside, local
        local.unlink(missing_ok=True)
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(local))
        self._listener.listen(8)
        self._closed = threading.Event()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, name=f"lab-relay-{local.name}", daemon=True).start()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept()
        self._listener.close()
        with self._lock:
            for conn in self._open:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        self.local.unlink(missing_ok=True)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), name=f"lab-relay-{self.local.name}",
                             daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with self._lock:
            self._open.add(conn)
        try:
            far = self._exec()
        except TRANSPORT_ERRORS:
            far = None  # the agent could not start: the caller sees its connection end, and tries again
        try:
            if far is not None:
                _splice(conn, far)
        finally:
            with self._lock:
                self._open.discard(conn)
            conn.close()

    def _exec(self) -> Any:
        client = self.container.client
        assert client is not None  # a container the SDK made or found has its client
        api = client.api
        exec_id = api.exec_create(self.container.id, ["python3", "-m", "lab.agents.relay", "unix", self.inside],
                                  stdin=True, stdout=True, stderr=False, tty=False)["Id"]
        return api.exec_start(exec_id, socket=True, tty=False)


def _splice(conn: socket.socket, far: Any) -> None:
    """Bytes both ways until either end is done: ``far`` is the exec's hijacked connection (a
    socket, a socket's file object or an SSH channel), whose output comes in Docker's frames."""
    raw = getattr(far, "_sock", far)

    def upstream() -> None:
        try:
            while data := conn.recv(65536):
                raw.sendall(data)
        except TRANSPORT_ERRORS:
            pass
        finally:
            with contextlib.suppress(*TRANSPORT_ERRORS):
                if isinstance(raw, paramiko.Channel):
                    raw.shutdown_write()
                else:
                    raw.shutdown(socket.SHUT_WR)

    sender = threading.Thread(target=upstream, name="lab-relay-up", daemon=True)
    sender.start()
    try:
        for stream, data in frames_iter(far, tty=False):
            if stream == 1 and data:
                conn.sendall(data)
    except TRANSPORT_ERRORS:
        pass
    finally:
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(*TRANSPORT_ERRORS):
            far.close()
        sender.join(timeout=5)
