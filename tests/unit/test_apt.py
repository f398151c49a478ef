"""lab.apt.debian_mirror: this machine's Debian archive from its apt configuration."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from lab.apt import APT_DIR, LISTING_SCRIPT, MARKER, debian_mirror, mirror_of, sources_in_listing
from lab.errors import ConfigError

SECURITY_STANZA = """\
Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""

MAIN_STANZA = """\
Types: deb
URIs: http://mirror.example/debian/
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


def write(apt_dir: Path, name: str, text: str) -> None:
    path = apt_dir / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_deb822_skips_the_security_stanza(tmp_path: Path) -> None:
    write(tmp_path, "sources.list.d/debian.sources", f"{SECURITY_STANZA}\n{MAIN_STANZA}")
    assert debian_mirror(tmp_path) == "http://mirror.example/debian"


def test_deb822_with_comments_and_several_blank_lines(tmp_path: Path) -> None:
    text = f"# Modernized from /etc/apt/sources.list\n{SECURITY_STANZA}\n\n  \n{MAIN_STANZA}"
    write(tmp_path, "sources.list.d/debian.sources", text)
    assert debian_mirror(tmp_path) == "http://mirror.example/debian"


def test_deb822_field_names_are_case_insensitive(tmp_path: Path) -> None:
    write(tmp_path, "sources.list.d/debian.sources", "types: deb\nuris: http://lower.example/debian\n")
    assert debian_mirror(tmp_path) == "http://lower.example/debian"


def test_deb822_disabled_stanza_is_skipped(tmp_path: Path) -> None:
    disabled = MAIN_STANZA.replace("mirror.example", "disabled.example") + "Enabled: no\n"
    write(tmp_path, "sources.list.d/debian.sources", f"{disabled}\n{MAIN_STANZA}")
    assert debian_mirror(tmp_path) == "http://mirror.example/debian"


@pytest.mark.parametrize("value", ["No", "false", "off"])
def test_deb822_disabled_stanza_is_skipped_for_every_apt_false_value(tmp_path: Path, value: str) -> None:
    disabled = MAIN_STANZA.replace("mirror.example", "disabled.example") + f"Enabled: {value}\n"
    write(tmp_path, "sources.list.d/debian.sources", f"{disabled}\n{MAIN_STANZA}")
    assert debian_mirror(tmp_path) == "http://mirror.example/debian"


def test_deb822_source_only_stanza_is_skipped(tmp_path: Path) -> None:
    src_only = MAIN_STANZA.replace("Types: deb", "Types: deb-src").replace("mirror.example", "src.example")
    write(tmp_path, "sources.list.d/debian.sources", f"{src_only}\n{MAIN_STANZA}")
    assert debian_mirror(tmp_path) == "http://mirror.example/debian"


def test_deb822_binary_and_source_types(tmp_path: Path) -> None:
    write(tmp_path, "sources.list.d/debian.sources", MAIN_STANZA.replace("Types: deb", "Types: deb-src deb"))
    assert debian_mirror(tmp_path) == "http://mirror.example/debian"


def test_one_line_with_options(tmp_path: Path) -> None:
    write(tmp_path, "sources.list",
          "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://one.example/debian bookworm main\n")
    assert debian_mirror(tmp_path) == "http://one.example/debian"


def test_one_line_with_spaced_options(tmp_path: Path) -> None:
    write(tmp_path, "sources.list", "deb [ arch=amd64 signed-by=/k.gpg ] http://one.example/debian/ bookworm main\n")
    assert debian_mirror(tmp_path) == "http://one.example/debian"


def test_one_line_skips_comments_sources_and_security(tmp_path: Path) -> None:
    write(tmp_path, "sources.list", "\n".join([
        "# deb http://commented.example/debian bookworm main",
        "deb-src http://src.example/debian bookworm main",
        "deb http://security.debian.org/debian-security bookworm-security main",
        "deb http://one.example/debian bookworm main  # the archive",
    ]) + "\n")
    assert debian_mirror(tmp_path) == "http://one.example/debian"


def test_one_line_in_sources_list_d(tmp_path: Path) -> None:
    write(tmp_path, "sources.list.d/extra.list", "deb http://extra.example/debian bookworm main\n")
    assert debian_mirror(tmp_path) == "http://extra.example/debian"


def test_nothing_found_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        debian_mirror(tmp_path)
    assert info.value.where == str(tmp_path)
    assert "images.mirror" in info.value.hint


def test_only_security_sources_is_a_config_error(tmp_path: Path) -> None:
    write(tmp_path, "sources.list.d/debian.sources", SECURITY_STANZA)
    write(tmp_path, "sources.list", "deb http://security.debian.org/debian-security bookworm-security main\n")
    with pytest.raises(ConfigError, match="no Debian archive found"):
        debian_mirror(tmp_path)


def test_only_disabled_sources_is_a_config_error(tmp_path: Path) -> None:
    write(tmp_path, "sources.list.d/debian.sources", MAIN_STANZA + "Enabled: no\n")
    with pytest.raises(ConfigError):
        debian_mirror(tmp_path)


# --- apt sources given as text (an image's, listed by LISTING_SCRIPT in a container of it) ---------

def listing(*files: tuple[str, str]) -> str:
    return "".join(f"\n{MARKER} {path}\n{text}" for path, text in files)


def test_a_listing_is_read_file_by_file() -> None:
    text = listing(("/etc/apt/sources.list", "deb http://one.example/debian bookworm main\n"),
                   ("/etc/apt/sources.list.d/debian.sources", MAIN_STANZA))
    assert sources_in_listing(text) == [("sources.list", "deb http://one.example/debian bookworm main\n"),
                                        ("debian.sources", MAIN_STANZA)]
    # deb822 files first, as for this machine's own configuration.
    assert mirror_of(sources_in_listing(text), "image x") == "http://mirror.example/debian"


def test_files_apt_does_not_read_are_ignored_in_a_listing() -> None:
    text = listing(("/etc/apt/sources.list.d/old.list.save", "deb http://saved.example/debian bookworm main\n"),
                   ("/etc/apt/sources.list.d/x.list", "deb http://x.example/debian bookworm main\n"))
    assert mirror_of(sources_in_listing(text), "image x") == "http://x.example/debian"


def test_an_empty_listing_names_where_it_came_from() -> None:
    with pytest.raises(ConfigError) as info:
        mirror_of(sources_in_listing(""), "image debian:trixie (its /etc/apt)")
    assert info.value.where == "image debian:trixie (its /etc/apt)" and "images.mirror" in info.value.hint


@pytest.mark.skipif(not APT_DIR.is_dir() or shutil.which("sh") is None, reason="no apt configuration here")
def test_the_listing_script_on_this_machine_finds_what_debian_mirror_finds() -> None:
    out = subprocess.run(["sh", "-c", LISTING_SCRIPT], capture_output=True, text=True, check=True).stdout
    assert mirror_of(sources_in_listing(out), "this machine") == debian_mirror()
