"""This machine's Debian mirror, read from its apt configuration (never named in the project)."""

from __future__ import annotations

import re
from pathlib import Path

from lab.errors import ConfigError

APT_DIR = Path("/etc/apt")


def debian_mirror(apt_dir: Path = APT_DIR) -> str:
    """The first Debian archive URI (not the security archive) of deb822 or one-line sources."""
    candidates: list[str] = []
    for f in sorted(apt_dir.glob("sources.list.d/*.sources")):
        candidates += _deb822_uris(f.read_text(errors="replace"))
    for f in [apt_dir / "sources.list", *sorted(apt_dir.glob("sources.list.d/*.list"))]:
        if f.exists():
            candidates += _one_line_uris(f.read_text(errors="replace"))
    for uri in candidates:
        if "security" not in uri:
            return uri.rstrip("/")
    raise ConfigError(str(apt_dir), "no Debian archive found in the apt sources",
                      "set images.mirror in lab.yaml to a Debian mirror URL")


def _deb822_uris(text: str) -> list[str]:
    uris = []
    for stanza in re.split(r"\n\s*\n", text):
        fields = dict(_fields(stanza))
        # apt reads Enabled as a boolean: no, false, off (any case) disable the stanza.
        enabled = fields.get("enabled", "yes").lower() not in ("no", "false", "off")
        if "deb" in fields.get("types", "").split() and enabled:
            uris += fields.get("uris", "").split()
    return uris


def _fields(stanza: str) -> list[tuple[str, str]]:
    out = []
    for line in stanza.splitlines():
        if line.startswith("#") or ":" not in line or line[:1].isspace():
            continue
        key, _, value = line.partition(":")
        out.append((key.strip().lower(), value.strip()))
    return out


def _one_line_uris(text: str) -> list[str]:
    uris = []
    for line in text.splitlines():
        words = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()
        if len(words) >= 3 and words[0] == "deb":
            uris.append(words[1])
    return uris
