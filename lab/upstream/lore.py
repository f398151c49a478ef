"""Series from a public-inbox mail archive (lore.kernel.org and its kind), by Message-ID, through b4.

b4 is what QEMU and kernel developers use to take a thread's latest series off the list: ``b4 am``
finds the series the message belongs to, its newest revision in that thread, and writes it as one
mbox `git am` takes. The lab runs it as a command with its own configuration given in the
environment (``GIT_CONFIG_COUNT``/``GIT_CONFIG_KEY_n``/``GIT_CONFIG_VALUE_n``, which git, and so b4,
reads above any file): ``b4.midmask`` points it at the configured archive (``<archive>/<msgid>/t.mbox.gz``),
attestation is off (it would look DKIM keys up in the DNS), and its cache lives in a temporary folder.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from lab.bounds import SERVER_LIMIT
from lab.config import DEFAULT_ARCHIVE, MSGID_RE
from lab.errors import excerpt
from lab.upstream.series import BRACKETS, Series, SeriesError, is_http, parse_mbox, too_large


def message_id(text: str) -> str:
    """The bare Message-ID (without its angle brackets), or a SeriesError saying what is expected."""
    m = MSGID_RE.fullmatch(text.strip())
    if m is None:
        raise SeriesError(f"{text!r} is not a Message-ID; expected <local@domain> or local@domain")
    return m.group(1) or m.group(2)


def looks_like_message_id(text: str) -> bool:
    return "@" in text and not is_http(text.strip()) and MSGID_RE.fullmatch(text.strip()) is not None


def b4_version() -> str:
    try:
        return importlib.metadata.version("b4")
    except importlib.metadata.PackageNotFoundError:
        return ""


def _b4() -> str:
    beside = Path(sys.executable).parent / "b4"  # the b4 installed with the lab, before any other on PATH
    found = str(beside) if beside.is_file() else shutil.which("b4")
    if not found:
        raise SeriesError("b4 is not installed, and a series by Message-ID needs it: pip install b4 "
                          "(or the lab with its extra: pip install 'netfilter-continuity-lab[lore]')")
    return found


def b4_environment(archive: str, home: Path) -> dict[str, str]:
    settings = {"b4.midmask": f"{archive.rstrip('/')}/%s", "b4.attestation-policy": "off"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_CONFIG_")}
    env.update(XDG_CACHE_HOME=str(home / "cache"), XDG_DATA_HOME=str(home / "data"),
               GIT_CONFIG_COUNT=str(len(settings)))
    for n, (key, value) in enumerate(settings.items()):
        env[f"GIT_CONFIG_KEY_{n}"], env[f"GIT_CONFIG_VALUE_{n}"] = key, value
    return env


def fetch(msgid: str, archive: str = DEFAULT_ARCHIVE, timeout: float = 300.0, read_limit: int = SERVER_LIMIT) -> Series:
    """The newest series of the thread ``msgid`` belongs to, as b4 gives it (at most ``read_limit`` bytes)."""
    msgid = message_id(msgid)
    if not is_http(archive):
        raise SeriesError(f"{archive!r}: the mail archive must be an http(s) URL (series.archive or --archive)")
    origin = f"{archive.rstrip('/')}/{msgid}/"
    with tempfile.TemporaryDirectory(prefix="lab-b4-") as tmp:
        out = Path(tmp) / "out"
        try:
            proc = subprocess.run([_b4(), "am", "--no-cache", "-o", str(out), "-n", "series", "--", msgid],
                                  env=b4_environment(archive, Path(tmp)), cwd=tmp, capture_output=True,
                                  text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            raise SeriesError(f"b4 did not fetch {origin} within {timeout:.0f} s; is the archive up?") from exc
        mbox = out / "series.mbx"
        if proc.returncode != 0 or not mbox.is_file():
            raise SeriesError(f"b4 could not fetch the series of {msgid} from {archive}: {_last(proc.stderr)}; "
                              "check the Message-ID and series.archive (or --archive)")
        if mbox.stat().st_size > read_limit:
            raise too_large(f"the series b4 fetched from {origin}", "use a local mbox (series.mbox)", read_limit)
        patches = parse_mbox(mbox.read_bytes(), origin)
        cover = out / "series.cover"
        subject = _subject(cover.read_text(errors="replace")) if cover.is_file() else patches[0].subject
    return Series(origin=origin, name=BRACKETS.sub("", subject) or msgid, patches=tuple(patches),
                  extra={"message_id": f"<{msgid}>", "archive": archive, "b4": b4_version()})


def _subject(text: str) -> str:
    m = re.search(r"^Subject: (.*(?:\n[ \t].*)*)", text, re.MULTILINE)
    return " ".join(m.group(1).split()) if m else ""


def _last(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("---")]
    return excerpt(lines[-1]) if lines else "(b4 said nothing)"
