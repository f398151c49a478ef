"""What a build's QEMU said of its netfilters, as QEMU says it and as the lab keeps it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab import statefile
from lab.config import FILTERS
from lab.vm import capabilities

REPLY = "".join(json.dumps(m) + "\n" for m in [
    {"QMP": {"version": {}, "capabilities": []}},
    {"return": {}},
    {"id": "filter-mirror", "return": [{"name": "queue", "type": "str"}, {"name": "outdev", "type": "str"}]},
    {"id": "filter-redirector", "return": [{"name": "indev", "type": "str"}, {"name": "outdev", "type": "str"}]},
    {"return": {}},
])


def test_qemus_answer_gives_each_filters_properties_sorted() -> None:
    assert capabilities.parse_properties(REPLY) == {"filter-mirror": ["outdev", "queue"],
                                                    "filter-redirector": ["indev", "outdev"]}


def test_an_error_for_one_filter_leaves_it_out() -> None:
    reply = REPLY.replace('{"id": "filter-mirror", "return"', '{"id": "filter-mirror", "error": {}, "x"')
    assert list(capabilities.parse_properties(reply)) == ["filter-redirector"]


def test_what_was_kept_reads_back(tmp_path: Path) -> None:
    found = capabilities.parse_properties(REPLY)
    statefile.write(tmp_path / capabilities.CACHE_NAME, {"sha256:1": json.dumps(found)})
    assert capabilities._kept(statefile.read(tmp_path / capabilities.CACHE_NAME)["sha256:1"]) == found


@pytest.mark.parametrize("text", ["", "not json", "[]", json.dumps({"filter-mirror": ["queue"]}),
                                  json.dumps({f: "queue" for f in FILTERS})])
def test_a_kept_answer_that_is_not_whole_is_asked_again(text: str) -> None:
    assert capabilities._kept(text) is None


def test_an_unreadable_state_file_is_none(tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text("{broken")
    assert statefile.read(tmp_path / "x.json") == {}
