"""A Debian mirror, read from apt configuration: this machine's, or an image's (never named in the project)."""

from __future__ import annotations

import re
from pathlib import Path

from lab.errors import ConfigError

APT_DIR = Path("/etc/apt")
MARKER = "### nfcl-apt-source"
# Run in a container of an image: its apt sources, each file after a line naming it.
LISTING_SCRIPT = ('for f in /etc/apt/sources.list /etc/apt/sources.list.d/*; do '
                  f'[ -f "$f" ] && printf "\\n{MARKER} %s\\n" "$f" && cat "$f"; done; true')


def debian_mirror(apt_dir: Path = APT_DIR) -> str:
    """The first Debian archive URI (not the security archive) of deb822 or one-line sources."""
    files = [*sorted(apt_dir.glob("sources.list.d/*.sources")), apt_dir / "sources.list",
             *sorted(apt_dir.glob("sources.list.d/*.list"))]
    sources = [(f.name, f.read_text(errors="replace")) for f in files if f.is_file()]
    return mirror_of(sources, str(apt_dir))


def sources_in_listing(text: str) -> list[tuple[str, str]]:
    """(file name, text) of each file in the output of LISTING_SCRIPT."""
    sources = []
    for section in text.split(f"\n{MARKER} ")[1:]:
        path, _, body = section.partition("\n")
        sources.append((path.strip().rsplit("/", 1)[-1], body))
    return sources


def mirror_of(sources: list[tuple[str, str]], where: str) -> str:
    """The first Debian archive of apt sources given as (file name, text): ``*.sources`` files are
    deb822 and come first, as apt reads them; any other is one-line."""
    candidates: list[str] = []
    for name, text in sorted(sources, key=lambda s: not s[0].endswith(".sources")):
        if name.endswith(".sources"):
            candidates += _deb822_uris(text)
        elif name.endswith(".list"):  # apt reads no other file (.save, .orig, ...)
            candidates += _one_line_uris(text)
    for uri in candidates:
        if "security" not in uri:
            return uri.rstrip("/")
    raise ConfigError(where, "no Debian archive found in the apt sources",
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
