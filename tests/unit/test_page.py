"""report.html: the run's page, from report.json and the cells' folders; and in a real browser."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest

from lab import cli
from lab.results import page
from lab.results.report import Report, Row
from lab.results.verdict import Verdict
from lab.runner import write_report
from tests.unit.test_report import guest_cell, ran

SERIES = {"origin": "patchwork", "name": "net: keep filters flowing", "version": 2, "patchwork_id": 491379,
          "mbox": "", "patches": [{"n": "1/2", "subject": "[PATCH 1/2] net: drain while stopped", "hash": "a"},
                                  {"n": "2/2", "subject": "[PATCH 2/2] net: a property for it", "hash": "b"}]}


def png(path: Path, width: int = 40, height: int = 30) -> None:
    """A real picture, small: red pixels, as a browser must decode them."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    pixels = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(pixels)) + chunk(b"IEND", b""))


def a_run(out: Path) -> Report:
    """A run's folder as `lab run` leaves it: a stream cell, a guest cell, one unsupported (no files)."""
    rows = []
    for row in (ran(), guest_cell(1654, 3085)):
        folder = out / f"{row.profile}-{row.scenario}"
        png(folder / "timeline.png")
        for name in ("primary/qemu.log", "primary/qmp.jsonl", "secondary/stream.pcap", "result.json"):
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text("x\n")
        rows.append(dataclasses.replace(row, artefacts=str(folder)))
    rows.append(Row.of(profile="control", scenario="redirector-when-stopped", filter="filter-redirector",
                       expected=Verdict.UNSUPPORTED, verdict=Verdict.UNSUPPORTED, accel="tcg",
                       error="has no property enable_when_stopped"))
    builds = {"baseline": {"runtime_image": "nfcl/runtime:baseline-1", "qemu_source": "QEMU 10.2.2", "series": None},
              "control": {"runtime_image": "nfcl/runtime:control-2", "qemu_source": "QEMU 10.2.2", "series": SERIES,
                          "filter_properties": {"filter-mirror": ["netdev", "outdev", "queue"]}}}
    return Report(config="lab.yaml", run="9b533e", accel="tcg", accel_reason="no /dev/kvm", builds=builds,
                  engines={"local": {"address": "192.0.2.2", "sees_files": True}}, rows=rows)


class Page(HTMLParser):
    """What the page holds: its matrix cells' classes, every link and picture, any script or style sheet."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.cells: list[list[str]] = []
        self.links: list[str] = []
        self.pictures: list[str] = []
        self.loads: list[str] = []  # <script>, <link>: what a self-contained page has none of
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "td" and "cell" in (a.get("class") or "").split():
            self.cells.append((a.get("class") or "").split())
        elif tag == "a":
            self.links.append(a.get("href") or "")
        elif tag == "img":
            self.pictures.append(a.get("src") or "")
        elif tag in ("script", "link", "iframe"):
            self.loads.append(tag)


def test_the_matrix_has_one_cell_per_row_coloured_by_its_match(tmp_path: Path) -> None:
    report = a_run(tmp_path)
    found = Page(page.write(write_report(report, tmp_path)).read_text())
    assert len(found.cells) == len(report.rows)
    assert [c[1] for c in found.cells] == ["ok", "ok", "ok"]
    mismatch = dataclasses.replace(report, rows=[dataclasses.replace(ran("gap"), artefacts=""), *report.rows[1:]])
    assert [c[1] for c in Page(page.render(mismatch.to_json(), tmp_path)).cells] == ["mismatch", "ok", "ok"]


def test_every_link_and_picture_is_relative_and_there(tmp_path: Path) -> None:
    text = page.write(write_report(a_run(tmp_path), tmp_path)).read_text()
    found = Page(text)
    assert not found.loads and "://" not in text, "nothing loaded, nothing absolute"
    files = [href for href in found.links if not href.startswith("#")]
    assert len(found.pictures) == 2 and len(files) == 2 * 5
    for target in [*files, *found.pictures]:
        assert not target.startswith("/") and (tmp_path / target).is_file(), target
    anchors = {href[1:] for href in found.links if href.startswith("#")}
    assert len(anchors) == 3 and all(f'id="{a}"' in text for a in anchors)


def test_each_cell_shows_its_views_figures_reasons_and_the_builds(tmp_path: Path) -> None:
    text = page.render(a_run(tmp_path).to_json(), tmp_path)
    assert "1654/4739" in text and "judged on the guest" in text and "judged on the stream" in text
    assert "has no property enable_when_stopped" in text
    assert "[PATCH 1/2] net: drain while stopped" in text and "[PATCH 2/2] net: a property for it" in text
    assert "no /dev/kvm" in text and "192.0.2.2" in text


def test_names_are_escaped(tmp_path: Path) -> None:
    report = a_run(tmp_path)
    report.rows[0] = dataclasses.replace(report.rows[0], reasons=["<b>frames</b> & more"])
    text = page.render(report.to_json(), tmp_path)
    assert "&lt;b&gt;frames&lt;/b&gt; &amp; more" in text and "<b>frames</b>" not in text


def test_lab_report_html_draws_the_page_again(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = a_run(tmp_path).write(tmp_path)
    assert not (tmp_path / page.PAGE).exists()
    assert cli.main(["report", "html", str(path)]) == 0
    assert capsys.readouterr().out == f"page: {tmp_path / page.PAGE}\n"
    assert len(Page((tmp_path / page.PAGE).read_text()).cells) == 3


@pytest.mark.parametrize("content", [None, "{not json", '{"lab": {}}'])
def test_lab_report_html_on_what_is_not_a_report_is_one_line(tmp_path: Path, content: str | None,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "report.json"
    if content is not None:
        path.write_text(content)
    assert cli.main(["report", "html", str(path)]) == cli.EXIT_LAB_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and "Traceback" not in err


# -- in a real browser ------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium")
# Added to a copy of the page only: the page itself runs no script.
PROBE = ("<script>window.addEventListener('load', () => { for (const i of document.images) "
         "i.setAttribute('data-natural-width', i.naturalWidth); document.body.setAttribute('data-probed', 'yes'); "
         "});</script></body>")


def chromium(*args: str, profile: Path) -> str:
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--no-first-run", f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True).stdout


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (Debian's package: apt-get install "
                                             "chromium; make test installs it)")
def test_the_page_in_a_browser_shows_every_picture_and_a_cell_per_row(tmp_path: Path, lab_out: Path) -> None:
    out = tmp_path / "run"
    report = a_run(out)
    shown = page.write(write_report(report, out))
    probe = out / "probe.html"  # beside the page: the same relative links
    probe.write_text(shown.read_text().replace("</body>", PROBE))
    dom = chromium("--virtual-time-budget=5000", "--dump-dom", probe.as_uri(), profile=tmp_path / "profile")
    assert 'data-probed="yes"' in dom, "the page did not finish loading"
    widths = re.findall(r'data-natural-width="(\d+)"', dom)
    assert len(widths) == 2 and all(int(w) > 0 for w in widths), f"a picture did not load: {widths}"
    assert len(Page(dom).cells) == len(report.rows)
    lab_out.mkdir(parents=True, exist_ok=True)
    screenshot = lab_out / "report-html.png"
    chromium(f"--screenshot={screenshot}", "--window-size=1280,2000", shown.as_uri(), profile=tmp_path / "profile")
    assert screenshot.stat().st_size > 0
    assert json.loads((out / "report.json").read_text())["lab"]["run"] == "9b533e"
