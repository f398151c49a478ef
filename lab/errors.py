"""Errors the lab reports to its user.

A LabError means the lab itself could not run (bad input, Docker missing, an image that did not
build): the CLI prints its one line and exits 2. A ScenarioError is a cell that could not run to its
end: that cell's ``error`` verdict, while the others go on. Cancelled is neither: the person (or a
signal) stopped the run.
"""

from __future__ import annotations


class Error(Exception):
    """The root of the lab's own errors: each is one of the three kinds below."""


class LabError(Error):
    """The lab could not do what was asked; ``str()`` is the one line the user sees."""


class ConfigError(LabError):
    """lab.yaml (or a command-line selection) is invalid."""

    def __init__(self, where: str, problem: str, hint: str = "") -> None:
        self.where = where
        self.problem = problem
        self.hint = hint
        text = f"{where}: {problem}"
        if hint:
            text += f" ({hint})"
        super().__init__(text)


class EngineError(LabError):
    """A Docker engine could not do what the lab asked (lab.engine says so, whatever the transport's own
    error was): ``str()`` names the engine, what failed and what to do."""

    def __init__(self, engine: str, problem: str, hint: str = "") -> None:
        self.engine = engine
        self.problem = problem
        self.hint = hint
        super().__init__(self.line())

    def line(self) -> str:
        return f"engine {self.engine} {self.problem}" + (f"; {self.hint}" if self.hint else "")


class EngineUnreachable(EngineError):
    """The engine does not answer: its daemon is down, or the connection to it is."""


class EngineRefused(EngineError):
    """The engine's SSH end will not take the lab: an unknown host key, a key it refuses."""


class DockerUnavailable(EngineUnreachable):
    """No Docker daemon answers on this machine (the default engine)."""

    def line(self) -> str:
        return f"no Docker daemon answers ({self.problem}); {self.hint}"


class ImageBuildError(LabError):
    """An image failed to build; says which image and step and where the log is."""


class LeftoverLab(LabError):
    """Resources of an earlier lab with the same names still exist."""


class ScenarioError(Error):
    """A scenario could not run to its end; the reason becomes an ``error`` verdict."""


class Timeout(ScenarioError):
    """A bounded wait ran out; the message says what was awaited and the last state seen."""


class QemuExited(ScenarioError):
    """QEMU ended while the lab waited on it: not a wait that ran out, and waiting longer would not help."""


class Cancelled(Error):
    """The run was cancelled (Ctrl-C, SIGTERM, SIGHUP) while a cell was waiting: not the cell's failure,
    so no verdict, not even ``error``."""


def one_line(exc: BaseException) -> str:
    """The first line of an error's message (its type when it says nothing)."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0].strip() if lines else type(exc).__name__


def excerpt(text: str, limit: int = 120) -> str:
    """Outside text (a server's answer, a name, a command's output) as a short piece of one line:
    whatever size it came in, the message quoting it stays readable."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[:limit - 3].rstrip() + "..."
