"""lab run --shard I/N: disjoint parts of the selection in the configured order, together all of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import cli, config
from lab.errors import LabError
from lab.runner import select_cells
from lab.shard import Shard, configured_order

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("count", [1, 2, 3, 5, 7, 14])
def test_the_parts_are_the_selection_in_order_each_cell_once(count: int) -> None:
    cells = select_cells(config.load(ROOT / "lab.yaml"))
    assert len(cells) >= count
    parts = [Shard(i, count).of(cells) for i in range(1, count + 1)]
    assert [c for part in parts for c in part] == cells
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


def test_the_split_is_stable_and_contiguous() -> None:
    items = list(range(10))
    assert Shard(1, 3).of(items) == [0, 1, 2]
    assert Shard(2, 3).of(items) == [3, 4, 5]
    assert Shard(3, 3).of(items) == [6, 7, 8, 9]
    assert Shard(2, 3).of(items) == Shard.parse("2/3").of(items)


def test_more_parts_than_cells_is_refused() -> None:
    with pytest.raises(LabError, match=r"--shard 3/3: 2 cells selected, fewer than 3 parts; use at most 2 parts"):
        Shard(3, 3).of(["a", "b"])
    with pytest.raises(LabError, match=r"--shard 1/3: 2 cells"):
        Shard(1, 3).of(["a", "b"])


@pytest.mark.parametrize("text", ["0/2", "3/2", "1/0", "1", "a/b", "1/2/3", "-1/2", ""])
def test_bad_shards_are_one_line_and_exit_2(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", "--config", str(ROOT / "lab.yaml"), "--shard", text]) == cli.EXIT_LAB_ERROR
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--shard" in err and "Traceback" not in err, err


def test_a_shard_past_the_selection_is_refused_before_docker(capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["run", "--config", str(ROOT / "lab.yaml"), "--profile", "baseline", "--scenario", "mirror",
                   "--shard", "2/2"])
    err = capsys.readouterr().err
    assert rc == cli.EXIT_LAB_ERROR and err.count("\n") == 1 and "fewer than 2 parts" in err, err


def test_the_order_of_the_names_given_does_not_change_the_split() -> None:
    cfg = config.load(ROOT / "lab.yaml")
    one = select_cells(cfg, ["control", "baseline"], ["redirector", "mirror"])
    other = select_cells(cfg, ["baseline", "control"], ["mirror", "redirector"])
    assert one != other and configured_order(cfg, one) == configured_order(cfg, other)
    assert [(c.profile.name, c.scenario.name) for c in configured_order(cfg, one)] == [
        ("baseline", "mirror"), ("baseline", "redirector"), ("control", "mirror"), ("control", "redirector")]
