"""Property-based tests: whatever comes in, the lab answers with its result or one line of LabError.

Inputs are lab.yaml (any bytes, any YAML structure, the repository's lab.yaml with any node
replaced), series (any mbox text, any folder of format-patch files), Patchwork's JSON answers (the
parsing functions directly, and through a local replay server), and captures for the analysis (whose
counts must add up). Each test has a bounded budget and keeps no example database.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lab import cli, config
from lab.errors import LabError, ScenarioError
from lab.results.analysis import Frame, Sent, StopWindow, analyse, analyse_guest
from lab.results.verdict import Verdict
from lab.upstream import series
from lab.vm.qmp import Monitor
from tests.unit.qmp_server import GREETING
from tests.unit.test_series import RECORDED_HOST, ReplayServer, Reply

REPO_CONFIG = Path(__file__).resolve().parents[2] / "lab.yaml"
T = TypeVar("T")
FUZZ = settings(max_examples=200, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def outcome(call: Callable[[], T]) -> T | None:
    """What ``call`` returns, or None when it raised a LabError of one line (any other exception fails)."""
    try:
        return call()
    except LabError as exc:
        message = str(exc)
        assert message.strip() and "\n" not in message and "\r" not in message, repr(message)
        return None


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="nfcl-fuzz-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


# --- values that have broken parsers before, mixed into every strategy ----------------------------

NASTY = st.sampled_from(["", " ", "\n", "x,netdev=n1", "a=b", "-b", "--upload-pack=x", "..", "main\n", "nan",
                         "https://x/q.git", "file:///etc/passwd", "/abs", "~", "null", "1:10.2.2+ds-1", "\x00",
                         "\u2028", "ü", "0" * 5000])
TEXT = st.text(max_size=40) | NASTY
SCALARS = (st.none() | st.booleans() | st.integers() | st.integers(-(10**30), 10**30)
           | st.floats(allow_nan=True, allow_infinity=True) | TEXT)
KEYS = TEXT | st.integers(-5, 5) | st.booleans() | st.none() | st.sampled_from(
    ["lab", "images", "profiles", "scenarios", "traffic", "migration", "timeouts", "guest", "qemu", "series",
     "expect", "properties", "default", "filter", "source", "url", "ref", "mbox", "patchwork", "name"])
STRUCTURES = st.recursive(SCALARS, lambda children: st.lists(children, max_size=4)
                          | st.dictionaries(KEYS, children, max_size=4), max_leaves=25)


# --- lab.yaml ---------------------------------------------------------------------------------------

def load_or_error(path: Path) -> None:
    cfg = outcome(lambda: config.load(path))
    assert cfg is None or (isinstance(cfg, config.LabConfig) and any(p.default for p in cfg.profiles.values()))


def parse_or_error(data: object) -> None:
    cfg = outcome(lambda: config.parse(data))
    assert cfg is None or (isinstance(cfg, config.LabConfig) and cfg.profiles and cfg.scenarios)


YAML_TEXT = st.lists(st.sampled_from(["profiles:", "scenarios:", "  ", "- ", ": ", "\n", "{", "}", "[", "]", "&a",
                                      "*a", "!!binary", "!!set", "!!python/object", "? ", "|", ">", "'", '"', "#",
                                      "%YAML 1.1\n", "---\n", "...\n", "x", "1", "true", "~", "<<: *a"])
                     | st.text(max_size=10), max_size=40).map("".join)


@FUZZ
@given(st.binary(max_size=2000) | YAML_TEXT.map(lambda t: t.encode(errors="surrogatepass")))
def test_any_bytes_as_lab_yaml(scratch: Path, data: bytes) -> None:
    path = scratch / "lab.yaml"
    path.write_bytes(data)
    load_or_error(path)


@FUZZ
@given(STRUCTURES)
def test_any_yaml_structure(data: object) -> None:
    parse_or_error(data)


REAL = yaml.safe_load(REPO_CONFIG.read_text())


@st.composite
def mutated_config(draw: st.DrawFn) -> object:
    """The repository's lab.yaml with one node replaced, removed, or given a sibling."""
    data = copy.deepcopy(REAL)
    parent: Any = None
    key: Any = None
    node: Any = data
    while isinstance(node, (dict, list)) and node and draw(st.integers(0, 3)):
        parent = node
        key = draw(st.sampled_from(list(node) if isinstance(node, dict) else range(len(node))))
        node = node[key]
    action = draw(st.sampled_from(["replace", "remove", "add"]))
    value = draw(STRUCTURES)
    if parent is None:
        return value
    if action == "replace":
        parent[key] = value
    elif action == "remove":
        del parent[key]
    elif isinstance(parent, dict):
        parent[draw(KEYS)] = value
    else:
        parent.append(value)
    return data


@FUZZ
@given(mutated_config())
def test_the_repository_lab_yaml_with_any_node_replaced(data: object) -> None:
    parse_or_error(data)


@FUZZ
@given(mutated_config())
def test_mutated_lab_yaml_through_the_file(scratch: Path, data: object) -> None:
    path = scratch / "lab.yaml"
    try:
        path.write_text(yaml.safe_dump(data))
    except yaml.YAMLError:
        return  # not representable as YAML text (a key YAML cannot write back)
    load_or_error(path)


# --- series from mbox files and patch folders ----------------------------------------------------------

MAIL_PARTS = st.sampled_from([
    "From 0123456789abcdef0123456789abcdef01234567 Mon Sep 17 00:00:00 2001\n", "From: A <a@b>\n",
    "Subject: [PATCH 1/2] net: one\n", "Subject: [PATCH 2/2] net: two\n", "Subject: [PATCH 2/3] net: v2\n",
    "Subject: [PATCH 0/2] cover\n", "Subject: [PATCH v2 01/12] x\n", "Subject: no number\n", "Subject:\n",
    "Subject: =?utf-8?q?=E2=80?=\n", "Subject: =?x?b?????=\n", "Subject: [PATCH 1/99999999] x\n",
    "Subject: a\n b\n", "Content-Type: multipart/mixed; boundary=\"b\"\n", "--b\n", "\n", "---\n",
    "diff --git a/f.c b/f.c\n", "--- a/f.c\n+++ b/f.c\n@@ -1 +1 @@\n-x\n+y\n", "Date: \x00\n", ">From x\n",
])
MAIL_TEXT = st.lists(MAIL_PARTS | st.text(max_size=20), max_size=30).map("".join)


def load_series_or_error(path: Path) -> None:
    loaded = outcome(lambda: series.load_local(path))
    if loaded is not None:
        total = len(loaded.patches)
        assert total and [(p.index, p.total) for p in loaded.patches] == [(n, total) for n in range(1, total + 1)]
        assert all(b"\ndiff --git " in p.message and p.subject for p in loaded.patches)


@FUZZ
@given(MAIL_TEXT.map(lambda t: t.encode(errors="surrogatepass")) | st.binary(max_size=1000))
def test_any_text_as_an_mbox(scratch: Path, data: bytes) -> None:
    path = scratch / "series.mbox"
    path.write_bytes(data)
    load_series_or_error(path)


@FUZZ
@given(st.lists(MAIL_TEXT, max_size=5))
def test_any_folder_of_format_patch_files(scratch: Path, texts: list[str]) -> None:
    folder = scratch / "series"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    for n, text in enumerate(texts):
        (folder / f"{n:04d}-x.patch").write_bytes(text.encode(errors="surrogatepass"))
    load_series_or_error(folder)


# --- Patchwork's answers -------------------------------------------------------------------------------

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | TEXT,
                    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
                    max_leaves=20)
API_URL = "http://127.0.0.1:9/api/series/1/"
SERIES_FIELDS = {"id": st.integers(-2, 3) | JSON, "name": TEXT | JSON, "version": st.integers(-1, 3) | JSON,
                 "mbox": st.sampled_from(["http://127.0.0.1:9/mbox/", "file:///etc/passwd", ""]) | JSON,
                 "received_all": st.booleans() | JSON, "total": st.integers(-1, 13) | JSON}
SERIES_RECORDS = st.fixed_dictionaries({}, optional=SERIES_FIELDS) | JSON
PATCH_RECORDS = st.fixed_dictionaries({}, optional={
    "name": TEXT | JSON, "series": st.lists(SERIES_RECORDS, max_size=2) | JSON})


def answer(body: bytes) -> dict[str, Any] | None:
    record = outcome(lambda: series.json_object(body, API_URL))
    assert record is None or isinstance(record, dict)
    return record


@FUZZ
@given(st.binary(max_size=300) | JSON.map(lambda v: json.dumps(v).encode()) | st.integers(1, 5000).map(
    lambda depth: b"[" * depth + b"]" * depth))
def test_any_answer_body(body: bytes) -> None:
    answer(body)


@FUZZ
@given(SERIES_RECORDS)
def test_any_series_record(record: Any) -> None:
    parsed = answer(json.dumps(record).encode())
    info = outcome(lambda: series.series_info(parsed, 1, API_URL)) if parsed is not None else None
    if info is not None:
        assert isinstance(info.id, int) and info.id >= 1 and isinstance(info.version, int) and info.version >= 1
        assert isinstance(info.name, str) and info.name and "\n" not in info.name and isinstance(info.mbox, str)
        assert info.received_all in (True, False, None)
        assert info.total is None or (isinstance(info.total, int) and not isinstance(info.total, bool))


@FUZZ
@given(PATCH_RECORDS)
def test_any_patch_record(record: Any) -> None:
    parsed = answer(json.dumps(record).encode())
    entry = outcome(lambda: series.patch_series(parsed, 1)) if parsed is not None else None
    assert entry is None or (isinstance(entry, dict) and isinstance(entry["id"], int) and entry["id"] >= 1)


@pytest.fixture(scope="module")
def replay() -> Iterator[ReplayServer]:
    server = ReplayServer()
    yield server
    server.close()


# The mbox link points at the replay server (its recorded host is rewritten) or at no http(s) URL:
# never anywhere a test could reach beyond this machine.
MBOX_LINKS = st.sampled_from([f"{RECORDED_HOST}/mbox/", "file:///etc/passwd", "ftp://127.0.0.1/x", "", "/mbox/"])


@settings(FUZZ, max_examples=60)
@given(PATCH_RECORDS, SERIES_RECORDS, MBOX_LINKS, MAIL_TEXT)
def test_patchwork_answers_through_http(replay: ReplayServer, patch: Any, record: Any, mbox_link: str,
                                        mbox: str) -> None:
    if isinstance(patch, dict) and isinstance(patch.get("series"), list):
        patch["series"] = [{**s, "mbox": mbox_link} if isinstance(s, dict) else s for s in patch["series"]]
    if isinstance(record, dict):
        record["mbox"] = mbox_link
    replay.routes.clear()
    replay.json("/api/patches/1/", patch)
    replay.routes["/api/series/1/"] = Reply(body=json.dumps(record).encode())
    replay.mbox("/mbox/", mbox.encode(errors="surrogatepass"))

    def resolve_and_fetch() -> series.Series:
        pw, info = series.resolve(f"{replay.base}/api/patches/1/")
        return pw.fetch(info)

    fetched = outcome(resolve_and_fetch)
    assert fetched is None or (fetched.patches and fetched.mbox_url == f"{replay.base}/mbox/")


# --- the analysis -------------------------------------------------------------------------------------

T0 = 1_700_000_000.0
TIMES = st.floats(T0 - 1, T0 + 5, allow_nan=False)


@st.composite
def runs(draw: st.DrawFn) -> tuple[Sent, list[Frame], list[Frame], StopWindow]:
    count = draw(st.integers(0, 40))
    steps = draw(st.lists(st.floats(0, 0.1, allow_nan=False), min_size=count, max_size=count))
    times = [T0 + sum(steps[:i + 1]) for i in range(count)]
    sent = Sent(run_id=1, frames=tuple(Frame(seq, t) for seq, t in enumerate(times)))
    seqs = st.integers(-2, count + 2) | (st.sampled_from(range(count)) if count else st.integers(0, 0))
    stream = draw(st.lists(st.builds(Frame, seqs, TIMES), max_size=60))
    delivered = draw(st.lists(st.builds(Frame, seqs, TIMES), max_size=60))
    window = StopWindow(stop=draw(st.none() | TIMES), resume=draw(TIMES))
    return sent, stream, delivered, window


def reference_counts(stream: list[Frame], end: float) -> tuple[int, int]:
    """Duplicates (arrivals of a frame after its first) and reordered frames (a frame whose first
    arrival follows a higher one's), each frame counted once, by the plainest reading."""
    arrivals = [f.seq for f in stream if f.time <= end]
    firsts = [seq for i, seq in enumerate(arrivals) if seq not in arrivals[:i]]
    reordered = sum(1 for i, seq in enumerate(firsts) if any(earlier > seq for earlier in firsts[:i]))
    return len(arrivals) - len(firsts), reordered


@FUZZ
@given(runs())
def test_analysis_counts_add_up(run: tuple[Sent, list[Frame], list[Frame], StopWindow]) -> None:
    sent, stream, delivered, window = run
    result = analyse(sent, stream, delivered, window)
    assert result.frames_captured + result.lost == result.frames_sent == len(sent.frames)
    assert (result.duplicates, result.reordered) == reference_counts(stream, window.resume)
    assert result.lost_seqs == sorted(result.lost_seqs) and len(result.lost_seqs) == result.lost
    assert set(result.lost_seqs) <= {f.seq for f in sent.frames}
    assert result.verdict in (Verdict.CONTINUOUS, Verdict.GAP)
    assert math.isfinite(result.max_gap_ms) and result.max_gap_ms >= 0
    if result.verdict == Verdict.CONTINUOUS:
        assert result.reasons == [] and result.frames_during_stop > 0
        assert (result.lost, result.duplicates, result.reordered, result.undelivered) == (0, 0, 0, 0)
    else:
        assert result.reasons


@dataclass(frozen=True)
class _Clock:
    offset_s: float
    uncertainty_s: float = 0.0001


@FUZZ
@given(runs(), st.none() | st.floats(-5, 5, allow_nan=False), st.none() | st.floats(-5, 5, allow_nan=False))
def test_the_guests_view_adds_up(run: tuple[Sent, list[Frame], list[Frame], StopWindow], source: float | None,
                                 destination: float | None) -> None:
    sent, received, _delivered, window = run
    g = analyse_guest(sent, received, window.stop, None if source is None else _Clock(source),
                      None if destination is None else _Clock(destination))
    in_record = {f.seq for f in sent.frames}
    assert g.received + g.lost == len(in_record) + len({f.seq for f in received} - in_record)
    assert (g.duplicates, g.reordered) == reference_counts(received, math.inf)
    assert 0 <= g.frames_after_resume <= len(received)
    assert (g.latency_ms is None) or (destination is not None or g.frames_after_resume == 0)
    assert g.verdict == (Verdict.CONTINUOUS if not g.reasons else Verdict.GAP)


# --- QMP: what a QEMU's monitor may send back ------------------------------------------------------

QMP_GREETING = json.dumps(GREETING).encode() + b"\r\n"


@dataclass(frozen=True)
class QmpFault:
    at: str  # "greeting" (instead of QEMU's greeting) or "reply" (to the lab's first command)
    kind: str  # garbage, cut (a hang-up mid-reply), endless (a reply that never ends), silence, value
    data: bytes = b""


def _answer_fault(conn: socket.socket, fault: QmpFault, ident: object) -> None:
    if fault.kind == "garbage":
        conn.sendall(fault.data + b"\n")
    elif fault.kind == "cut":
        conn.sendall(json.dumps({"return": {"status": "running"}, "id": ident}).encode()[:len(fault.data) + 1])
        conn.shutdown(socket.SHUT_RDWR)
    elif fault.kind == "endless":
        conn.sendall(b'{"return": "')
        while True:  # until the lab hangs up
            conn.sendall(b"x" * 65536)
    elif fault.kind == "value":
        conn.sendall(fault.data.replace(b'"ID"', json.dumps(ident).encode()) + b"\r\n")
    elif fault.kind == "silence":
        conn.recv(1)  # until the lab hangs up


def serve_qmp(path: Path, fault: QmpFault) -> threading.Thread:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    listener.settimeout(30)

    def run() -> None:
        with listener, contextlib.suppress(OSError):
            conn, _ = listener.accept()
            conn.settimeout(30)
            with conn:
                if fault.at == "greeting":
                    _answer_fault(conn, fault, None)
                    return
                conn.sendall(QMP_GREETING)
                decoder, buf = json.JSONDecoder(), b""
                for answered in range(2):  # qmp_capabilities, then the lab's command
                    while True:
                        chunk = conn.recv(65536)
                        if not chunk:
                            return
                        buf += chunk
                        try:
                            msg, end = decoder.raw_decode(buf.decode().lstrip())
                        except ValueError:
                            continue
                        buf = b""
                        break
                    if answered == 0:
                        conn.sendall(json.dumps({"return": {}, "id": msg.get("id")}).encode() + b"\r\n")
                    else:
                        _answer_fault(conn, fault, msg.get("id"))

    thread = threading.Thread(target=run, name="qmp-fault", daemon=True)
    thread.start()
    return thread


QMP_VALUES = st.sampled_from([b'{"return": 5, "id": "ID"}', b'{"error": "no", "id": "ID"}',
                              b'{"error": {"class": 3}, "id": "ID"}', b'{"id": "ID"}', b"[1, 2]", b"null",
                              b'{"return": {}, "id": 12}', b'{"event": 5}', b'{"return": {}, "id": "ID"}'])
QMP_FAULTS = st.builds(QmpFault, st.sampled_from(["greeting", "reply"]),
                       st.sampled_from(["garbage", "cut", "endless", "silence"]),
                       st.binary(max_size=200)) | st.builds(QmpFault, st.just("reply"), st.just("value"), QMP_VALUES)


@settings(FUZZ, max_examples=40)
@given(QMP_FAULTS)
def test_whatever_a_monitor_sends_back_is_an_answer_or_one_line_in_bounded_time(fault: QmpFault) -> None:
    """The lab's own monitor (qemu.qmp under lab.qmp) against a QEMU that sends garbage, hangs up mid
    reply, never ends its reply or says nothing: within its bounds, an answer or the cell's one-line
    error (ScenarioError), and the connection closed."""
    folder = Path(tempfile.mkdtemp(prefix="qmp-"))  # short: a unix socket's path is under 108 bytes
    try:
        server = serve_qmp(folder / "qmp.sock", fault)
        started = time.monotonic()
        monitor = Monitor("primary", folder / "qmp.sock", folder / "qmp.jsonl", timeout=1.0)
        try:
            monitor.connect(2.0)
            monitor.cmd("query-status")
        except ScenarioError as exc:
            assert str(exc).strip() and "\n" not in str(exc), repr(str(exc))
        finally:
            monitor.close()
        assert time.monotonic() - started < 8
        server.join(timeout=5)
        assert not server.is_alive()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --- Patchwork's answers through the command line ---------------------------------------------------

HUGE_BODY = b"[" + b"0," * (17 * 2**20) + b"0]"  # past the 32 MiB the lab reads of one answer
PATCHWORK_BODIES = (JSON.map(lambda v: json.dumps(v).encode()) | PATCH_RECORDS.map(lambda v: json.dumps(v).encode())
                    | st.binary(max_size=300) | st.just(b"<html><body>Log in</body></html>") | st.just(HUGE_BODY))
# Where a redirect points: the same server (a loop, or on to the series), another loopback server
# that answers nothing, a local file, another protocol, nothing at all.
LOCATIONS = st.sampled_from([f"{RECORDED_HOST}/api/patches/1/", f"{RECORDED_HOST}/api/series/1/",
                             "http://127.0.0.2:9/api/patches/1/", "file:///etc/passwd", "ftp://127.0.0.1/x", ""])
PATCHWORK_REPLIES = st.builds(
    Reply, status=st.sampled_from([200, 200, 301, 302, 303, 307, 400, 403, 404, 500]), body=PATCHWORK_BODIES,
    content_type=st.sampled_from(["application/json", "text/html", "application/octet-stream"]),
    short_by=st.sampled_from([0, 0, 0, 100]), location=LOCATIONS)


@settings(FUZZ, max_examples=60)
@pytest.mark.usefixtures("only_loopback")
@pytest.mark.filterwarnings("ignore:Generating overly large repr")  # the huge body's, when an example fails
@given(patch=PATCHWORK_REPLIES, series_reply=PATCHWORK_REPLIES)
def test_any_patchwork_answer_to_lab_series_show(replay: ReplayServer, capsys: pytest.CaptureFixture[str],
                                                 patch: Reply, series_reply: Reply) -> None:
    """`lab series show` against a Patchwork that redirects, answers huge or cut bodies, JSON of any
    shape or no JSON, under any content type: exit 0 with the series, or exit 2 with one line; never
    a traceback."""
    replay.routes.clear()
    replay.routes["/api/patches/1/"] = patch
    replay.routes["/api/series/1/"] = series_reply
    replay.mbox("/mbox/", b"")
    rc = cli.main(["series", "show", f"{replay.base}/api/patches/1/"])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    if rc == 0:
        assert out.strip() and not err.strip(), err
    else:
        assert rc == 2 and err.count("\n") == 1 and len(err) < 2000, err
