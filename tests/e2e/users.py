"""The lab run by a user who is not root but a member of the docker group, as on GitHub's hosted
runner: as root, the user ``nfcl-runner`` (made when missing, with a home of its own); as any other
user, that user itself."""

from __future__ import annotations

import dataclasses
import grp
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

RUNNER = "nfcl-runner"
DOCKER_GROUP = "docker"
DOCKER_SOCKET = Path("/var/run/docker.sock")
# What `lab` needs on its path as that user: the docker CLI (`lab ssh`'s proxy command) and a shell's tools.
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
PASSED_ON = ("CI", "DOCKER_HOST", "TERM", "LANG")
USER_EXISTS = 9  # useradd's exit status
MIN_PYTHON = (3, 11, 4)  # pyproject.toml's requires-python


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    home: Path
    switch: bool  # whether commands go through runuser (the tests run as root)
    python: str = sys.executable  # the interpreter the lab runs in as this user
    library_path: str = ""  # where that interpreter's libpython is, when not where it was built for

    @property
    def lab(self) -> list[str]:
        return [self.python, "-m", "lab"]

    def run(self, argv: list[str], cwd: Path, timeout: float = 600.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(argv), cwd=cwd, capture_output=True, text=True, timeout=timeout,
                              check=False)

    def popen(self, argv: list[str], cwd: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.command(argv), cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def command(self, argv: list[str]) -> list[str]:
        if not self.switch:
            return argv
        # A clean environment, as a login would give it: nothing of root's (HOME, TMPDIR, ...) leaks in.
        given = {k: os.environ[k] for k in PASSED_ON if k in os.environ}
        if self.library_path:
            given["LD_LIBRARY_PATH"] = self.library_path
        return ["runuser", "-u", self.name, "--", "env", "-i", f"HOME={self.home}", f"USER={self.name}",
                f"PATH={Path(self.python).parent}:{SYSTEM_PATH}", "PYTHONDONTWRITEBYTECODE=1",
                *(f"{k}={v}" for k, v in given.items()), *argv]

    def folder(self, tmp_path: Path) -> Path:
        """A folder of the user's own: the test's own one, or, for another user, one in its home."""
        if not self.switch:
            return tmp_path
        path = self.home / f"nfcl-tests-{secrets.token_hex(4)}"
        path.mkdir(parents=True)
        os.chown(path, self.uid, self.gid)
        return path

    def give(self, path: Path) -> None:
        """What the test wrote into a user's folder (a copy of lab.yaml) made that user's."""
        for root, dirs, files in os.walk(path):
            for name in [*dirs, *files]:
                os.lchown(os.path.join(root, name), self.uid, self.gid)
        os.lchown(path, self.uid, self.gid)


def docker_member() -> tuple[User | None, str]:
    """The user the tests run `lab` as, or why there is none."""
    try:
        docker_gid = grp.getgrnam(DOCKER_GROUP).gr_gid
    except KeyError:
        return None, f"there is no {DOCKER_GROUP} group (Debian's docker.io package makes it)"
    if not os.environ.get("DOCKER_HOST") and DOCKER_SOCKET.exists() and DOCKER_SOCKET.stat().st_gid != docker_gid:
        return None, f"{DOCKER_SOCKET} is not the {DOCKER_GROUP} group's: start dockerd with --group {DOCKER_GROUP}"
    if os.geteuid() != 0:
        if docker_gid not in os.getgroups():
            return None, f"this user is not in the {DOCKER_GROUP} group"
        me = pwd.getpwuid(os.geteuid())
        return User(me.pw_name, me.pw_uid, me.pw_gid, Path(me.pw_dir), switch=False), ""
    if shutil.which("runuser") is None or shutil.which("useradd") is None:
        return None, "runuser and useradd are needed to run the lab as a user of the docker group"
    try:
        pwd.getpwnam(RUNNER)
    except KeyError:
        made = subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", "--groups", DOCKER_GROUP, RUNNER],
                              capture_output=True, text=True, timeout=60, check=False)
        if made.returncode not in (0, USER_EXISTS):  # another test worker may have made it meanwhile
            return None, f"cannot make the user {RUNNER}: {made.stderr.strip()}"
    subprocess.run(["usermod", "--append", "--groups", DOCKER_GROUP, RUNNER], check=True, capture_output=True,
                   timeout=60)
    entry = pwd.getpwnam(RUNNER)
    return User(RUNNER, entry.pw_uid, entry.pw_gid, Path(entry.pw_dir), switch=True), ""


def with_lab(user: User, wheel: Path, venv: Path) -> tuple[User | None, str]:
    """The user with the lab installed where it can run it: for another user, the lab's wheel in the
    venv ``venv`` (this test environment may be in root's home, and the lab in it editable, which
    another user cannot read); its dependencies come from pip's index, or the user's pip cache."""
    if not user.switch:
        return user, ""
    venv.mkdir(parents=True)
    shutil.copy(wheel, venv.parent / wheel.name)
    user.give(venv.parent)
    python, why = _python(user, venv.parent / "python")
    if python is None:
        return None, why
    pip = [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check",
           str(venv.parent / wheel.name)]
    for argv in ([python.python, "-m", "venv", str(venv)], pip):
        made = python.run(argv, cwd=venv.parent, timeout=900)
        if made.returncode != 0:
            return None, f"cannot install the lab for {user.name}: {(made.stderr or made.stdout).strip()[-500:]}"
    return dataclasses.replace(python, python=str(venv / "bin" / "python")), ""


def _python(user: User, copy: Path) -> tuple[User | None, str]:
    """The user with a Python the lab runs on (MIN_PYTHON, with venv) that it can execute: this
    test's own, the system's, or else a copy of this test's own in ``copy`` (its files hard-linked;
    this one may be in root's home, which no other user enters, as pyenv's are)."""
    for found in (os.path.realpath(sys.executable), shutil.which("python3", path=SYSTEM_PATH)):
        if found and _runs_the_lab(dataclasses.replace(user, python=found)):
            return dataclasses.replace(user, python=found), ""
    prefix = Path(sys.base_prefix)
    # Folders of the user's own (hard links share files, never folders): its test's folder is its to remove.
    copied = subprocess.run(["cp", "-al", str(prefix), str(copy)], capture_output=True, text=True, timeout=300,
                            check=False)
    if copied.returncode != 0:
        return None, f"cannot copy {prefix} for {user.name}: {copied.stderr.strip()[-500:]}"
    for folder in [copy, *(p for p in copy.rglob("*") if p.is_dir() and not p.is_symlink())]:
        os.lchown(folder, user.uid, user.gid)
    interpreter = copy / Path(sys.executable).resolve().relative_to(prefix.resolve())
    # A build linked to its own libpython finds it by the path it was built for (its runpath), the original's.
    shared = bool(sysconfig.get_config_var("Py_ENABLE_SHARED"))
    candidate = dataclasses.replace(user, python=str(interpreter), library_path=str(copy / "lib") if shared else "")
    if not _runs_the_lab(candidate):
        return None, (f"{user.name} can run no Python {'.'.join(map(str, MIN_PYTHON))} or later with venv "
                      "(python3-venv), not even a copy of this one")
    return candidate, ""


def _runs_the_lab(user: User) -> bool:
    probe = f"import sys, venv; sys.exit(sys.version_info < {MIN_PYTHON})"
    return user.run([user.python, "-c", probe], cwd=Path("/"), timeout=60).returncode == 0
