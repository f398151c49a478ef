"""`lab run --shard I/N`: the I-th of N disjoint parts of the selected cells.

The split is by lab.yaml's order (profiles outer, scenarios inner), whatever the order of the names
on the command line, in contiguous runs: the N parts together are exactly the selection, each cell
in one part, and a part mostly needs the images of one or two profiles (what a CI job then builds
or loads).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from lab.config import LabConfig
from lab.errors import LabError
from lab.runner import Cell

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``I/N`` with 1 <= I <= N; a ValueError says what is wrong (argparse prints it in one line)."""
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if m is None:
            raise ValueError(f"{text!r} is not I/N, e.g. 1/4")
        index, count = int(m.group(1)), int(m.group(2))
        if count < 1 or not 1 <= index <= count:
            raise ValueError(f"{text!r}: I must be from 1 to N, and N at least 1")
        return cls(index, count)

    def bounds(self, total: int) -> tuple[int, int]:
        """The part's [start, end) in a list of ``total``: sizes differ by one at most."""
        return (self.index - 1) * total // self.count, self.index * total // self.count

    def of(self, items: Sequence[T]) -> list[T]:
        """This part of ``items``. Refused when there are fewer cells than parts, whichever part is
        asked for: every part of one matrix then fails alike, not only those that came out empty."""
        if len(items) < self.count:
            raise LabError(f"--shard {self}: {len(items)} cell{'s' if len(items) != 1 else ''} selected, "
                           f"fewer than {self.count} parts; use at most {len(items)} parts")
        start, end = self.bounds(len(items))
        return list(items[start:end])

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def configured_order(cfg: LabConfig, cells: list[Cell]) -> list[Cell]:
    """The cells in lab.yaml's order: the same selection split the same way, however it was named."""
    profiles, scenarios = list(cfg.profiles), list(cfg.scenarios)
    return sorted(cells, key=lambda c: (profiles.index(c.profile.name), profiles.index(c.to.name),
                                        scenarios.index(c.scenario.name)))
