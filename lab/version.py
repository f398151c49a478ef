"""The lab's version: the installed package's, and where it runs from a git checkout, that checkout's
description (a tag or commit, ``-dirty`` with changes), which is what a bug report needs."""

from __future__ import annotations

import importlib.metadata
import subprocess
from pathlib import Path

PACKAGE = "netfilter-continuity-lab"
CHECKOUT = Path(__file__).resolve().parents[1]


def describe(checkout: Path = CHECKOUT) -> str:
    """``lab VERSION``, with ``(git DESCRIPTION)`` when ``checkout`` is a git work tree."""
    try:
        text = f"lab {importlib.metadata.version(PACKAGE)}"
    except importlib.metadata.PackageNotFoundError:
        text = "lab (not installed)"
    git = git_description(checkout)
    return f"{text} (git {git})" if git else text


def git_description(checkout: Path) -> str:
    """``git describe`` of the checkout, "" when it is none (an installed copy) or git is missing."""
    if not (checkout / ".git").exists():  # a folder in a work tree, or a file in a linked one
        return ""
    try:
        done = subprocess.run(["git", "-C", str(checkout), "describe", "--always", "--dirty", "--tags"],
                              capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""
