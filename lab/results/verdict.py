"""What the lab says of a cell: one word, the same in analysis, the report, JUnit and Patchwork checks."""

from __future__ import annotations

import enum


class Verdict(enum.StrEnum):
    """A cell's verdict. Its value is the word report.json and lab.yaml's ``expect`` use."""

    CONTINUOUS = "continuous"  # every frame sent reached the secondary side
    GAP = "gap"  # frames were lost while the source was stopped
    UNSUPPORTED = "unsupported"  # the build lacks a property the scenario sets, and the lab said so
    ERROR = "error"  # the cell could not measure (a lab or scenario failure): no verdict about QEMU
    NOT_RUN = "not-run"  # the run did not get to the cell (interrupted, or a lab error in an earlier cell)

    @property
    def decided(self) -> bool:
        """A verdict about QEMU, not about the lab."""
        return self not in (Verdict.ERROR, Verdict.NOT_RUN)


# What lab.yaml may expect of a cell: a verdict about QEMU.
EXPECTABLE = (Verdict.CONTINUOUS, Verdict.GAP, Verdict.UNSUPPORTED)
