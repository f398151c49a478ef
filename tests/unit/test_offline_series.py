"""Series 491379 offline: the lab's patches 1-11 in a folder beside Patchwork's record of patch 12/12.

The record is read as Patchwork's own mbox view renders a patch (patchwork/views/utils.py,
``_submission_to_mbox``): the original mail's headers, the message up to its ``---``, the
postscript, then the diff, unchanged.
"""

from __future__ import annotations

import email
import email.policy
import json
import re
from pathlib import Path

import pytest

from lab import config, images
from lab.errors import ConfigError
from lab.upstream import series
from lab.upstream.series import SeriesError

ROOT = Path(__file__).resolve().parents[2]
OFFLINE = ROOT / "series" / "491379-offline"
RECORDED = ROOT / "tests" / "fixtures" / "patchwork-api-patch-2194230.json"
KEPT_RECORD = OFFLINE / "patchwork-2194230.json"


def test_the_record_beside_the_patches_is_the_recorded_one_unedited() -> None:
    assert KEPT_RECORD.read_bytes() == RECORDED.read_bytes()


def test_the_folder_is_the_twelve_patches_with_the_record_last() -> None:
    loaded = series.load_local(OFFLINE)
    assert [p.index for p in loaded.patches] == list(range(1, 13))
    assert {p.total for p in loaded.patches} == {12}
    assert loaded.name == "net: introduce read_poll/write_poll"  # the series' title, from 01/12
    record = json.loads(RECORDED.read_text())
    last = loaded.patches[-1]
    assert last.subject == record["headers"]["Subject"] == "[PATCH 12/12] " + record["name"].split("] ", 1)[1]
    assert last.msgid == record["msgid"] and last.patchwork_id == record["id"]
    assert last.message.decode().endswith(record["diff"])  # every hunk exactly as Patchwork holds it


@pytest.mark.parametrize("index", range(1, 12))
def test_each_lab_patch_says_it_is_the_labs_reconstruction_of_its_patch(index: int) -> None:
    patch = series.load_local(OFFLINE).patches[index - 1]
    text = " ".join(patch.message.decode().split())
    assert patch.subject.startswith(f"[PATCH {index:02d}/12] ")
    assert f"the netfilter continuity lab's reconstruction of patch {index:02d}/12" in text
    assert "It is not the upstream patch." in text
    assert patch.patchwork_id is None


def test_the_provenance_names_the_record_of_patch_12() -> None:
    patches = series.load_local(OFFLINE).provenance()["patches"]
    record = json.loads(RECORDED.read_text())
    assert patches[-1] == {"n": "12/12", "subject": record["headers"]["Subject"],
                           "hash": series.load_local(OFFLINE).patches[-1].diff_hash,
                           "msgid": record["msgid"], "patchwork_id": record["id"]}
    assert all("patchwork_id" not in p for p in patches[:-1])


def test_a_record_becomes_the_mail_patchworks_mbox_view_makes() -> None:
    record = json.loads(RECORDED.read_text())
    raw = series.record_mail(record, "record")
    assert raw.startswith(b"From patchwork Sat Feb  7 13:47:28 2026\n")
    mail = email.message_from_bytes(raw, policy=email.policy.compat32)
    for key in ("From", "Subject", "Date", "In-Reply-To"):
        assert mail[key] == record["headers"][key]
    assert mail["X-Patchwork-Id"] == "2194230"
    assert mail["Content-Transfer-Encoding"] == "8bit" and len(mail.get_all("Content-Transfer-Encoding")) == 1
    body = mail.get_payload()
    message, _, rest = record["content"].partition("\n---\n")
    assert body.startswith(message.strip() + "\n---\n")
    assert body.endswith("\n\n" + record["diff"])
    assert len(mail.get_all("Received")) == len(record["headers"]["Received"])


def test_a_record_without_a_postscript_keeps_its_message_whole() -> None:
    record = {"id": 7, "date": "2026-02-07T13:47:28", "content": "Fix it.\n\nSigned-off-by: A <a@b.c>",
              "diff": "diff --git a/x b/x\n", "headers": {"Subject": "[PATCH] fix"}}
    body = series.record_mail(record, "r").decode().split("\n\n", 1)[1]
    assert body == "Fix it.\n\nSigned-off-by: A <a@b.c>\n\ndiff --git a/x b/x\n"


@pytest.mark.parametrize("text", ["[]", '{"id": 3}', '{"diff": "diff --git a/x b/x"}', "not json"])
def test_a_json_file_that_is_not_a_patch_record_is_one_line_naming_it(tmp_path: Path, text: str) -> None:
    (tmp_path / "0001-a.patch").write_bytes((OFFLINE / next(iter(sorted(p.name for p in OFFLINE.glob("0001-*"))))
                                             ).read_bytes())
    (tmp_path / "broken.json").write_text(text)
    with pytest.raises(SeriesError) as exc:
        series.load_local(tmp_path)
    assert "broken.json" in str(exc.value) and "\n" not in str(exc.value)


def test_a_profile_takes_part_of_a_series() -> None:
    cfg = config.load(ROOT / "lab.yaml")
    source = cfg.profiles["series-491379-offline-1-11"].series
    assert source is not None and source.patches == (1, 11)
    part = images.load_series(cfg, source)
    assert [p.index for p in part.patches] == list(range(1, 12)) and {p.total for p in part.patches} == {12}
    assert all(p.patchwork_id is None for p in part.patches)


def test_a_part_past_the_series_end_is_refused() -> None:
    whole = series.load_local(OFFLINE)
    with pytest.raises(SeriesError, match=re.escape("patches 1-13 asked for, the series has 12")):
        whole.only((1, 13))


@pytest.mark.parametrize("value", ["11-1", "0-3", "1", "one-two", "1-11-12"])
def test_a_patch_range_that_is_no_range_names_its_key(value: str) -> None:
    data = {"profiles": {"p": {"series": {"mbox": "series/491379-offline", "patches": value}}},
            "scenarios": {"s": {"filter": "filter-redirector", "expect": {"p": "continuous"}}}}
    with pytest.raises(ConfigError) as exc:
        config.parse(data)
    assert "profiles.p.series.patches" in str(exc.value)


def test_a_wait_before_the_switch_is_for_switches_at_the_stop_only() -> None:
    def scenario(**keys: object) -> dict[str, object]:
        return {"profiles": {"p": {}}, "scenarios": {"s": {"filter": "filter-redirector", "path": "guest",
                                                          "expect": {"p": "gap"}, **keys}}}
    assert config.parse(scenario(switch_on="at-stop", switch_after_ms=20)).scenarios["s"].switch_after_ms == 20
    assert config.load(ROOT / "lab.yaml").scenarios["guest-redirect-qmp"].switch_after_ms == 20
    for keys in ({"switch_on": "before-migrate", "switch_after_ms": 20}, {"switch_after_ms": 5},
                 {"switch_on": "at-stop", "switch_after_ms": -1}):
        with pytest.raises(ConfigError) as exc:
            config.parse(scenario(**keys))
        assert "scenarios.s.switch_after_ms" in str(exc.value)
