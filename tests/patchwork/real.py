"""The real Patchwork (the Django application from its own repository), served on 127.0.0.1.

``LAB_PATCHWORK_SRC`` names a checkout of getpatchwork/patchwork; this Python must have its
requirements (Django, djangorestframework, django-filter, sqlparse: `tox -e patchwork` installs
them). The server has an sqlite database of its own, one project, a maintainer and a user who is not
one, each with an API token, and takes mails through Patchwork's own parser (`parsearchive`), so
series, patches and their completeness are Patchwork's, not the lab's idea of them.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SRC_ENV = "LAB_PATCHWORK_SRC"
SETTINGS = '''
from patchwork.settings.dev import *  # noqa: F403

DATABASES = {{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": {database!r}}}}}
ENABLE_REST_API = True
'''
SEED = '''
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
from patchwork.models import Project

project = Project.objects.create(linkname={project!r}, name="QEMU", listid={listid!r},
                                 listemail="qemu-devel@nongnu.org")
maintainer = User.objects.create_user("maintainer", "maintainer@example.org", None)
maintainer.profile.maintainer_projects.add(project)
user = User.objects.create_user("user", "user@example.org", None)
print(Token.objects.create(user=maintainer).key, Token.objects.create(user=user).key)
'''
START_S = 60.0  # runserver answers within seconds here; a minute is a server that will not


@dataclass
class RealPatchwork:
    """Patchwork from ``src``, its database and settings in ``work``; ``start`` serves it."""

    src: Path
    work: Path
    project: str = "qemu-devel"
    listid: str = "qemu-devel.nongnu.org"
    maintainer_token: str = field(default="", repr=False)
    user_token: str = field(default="", repr=False)
    base: str = ""
    server: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        (self.work / "lab_patchwork_settings.py").write_text(SETTINGS.format(database=str(self.work / "db.sqlite3")))
        self.manage("migrate", "--no-input")
        # Its parser files every patch under a State and tags it: with no states, every mail is an error.
        self.manage("loaddata", "default_tags", "default_states")
        tokens = self.manage("shell", "-c", SEED.format(project=self.project, listid=self.listid)).split()
        self.maintainer_token, self.user_token = tokens[-2:]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        log = (self.work / "runserver.log").open("wb")
        self.server = subprocess.Popen([sys.executable, str(self.src / "manage.py"), "runserver",
                                        f"127.0.0.1:{port}", "--noreload"], env=self.env(), cwd=self.work,
                                       stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_S
        while not self._answers():
            if self.server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Patchwork's runserver did not answer; see {self.work / 'runserver.log'}")
            time.sleep(0.2)

    def close(self) -> None:
        if self.server is not None:
            self.server.terminate()
            try:
                self.server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()

    def env(self) -> dict[str, str]:
        return {**{k: v for k, v in os.environ.items() if "proxy" not in k.lower()},
                "DJANGO_SETTINGS_MODULE": "lab_patchwork_settings",
                "PYTHONPATH": os.pathsep.join([str(self.work), str(self.src)])}

    def manage(self, *args: str) -> str:
        return self._manage(*args).stdout

    def _manage(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, str(self.src / "manage.py"), *args], env=self.env(), cwd=self.work,
                              capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"manage.py {args[0]} failed ({done.returncode}): {done.stderr[-2000:]}")
        return done

    def receive(self, name: str, *mails: bytes) -> None:
        """The mails, as the list delivered them, through Patchwork's own parser."""
        mbox = self.work / f"{name}.mbox"
        mbox.write_bytes(b"".join(m if m.endswith(b"\n") else m + b"\n" for m in mails))
        done = self._manage("parsearchive", f"--list-id={self.listid}", str(mbox))
        # parsearchive exits 0 whatever it refused: what it took is in its summary, why not in its log.
        taken = re.search(r"^Total: (\d+) new entries", done.stdout, re.MULTILINE)
        if taken is None or int(taken.group(1)) != len(mails):
            raise RuntimeError(f"Patchwork's parser took {taken.group(1) if taken else 'none'} of the {len(mails)} "
                               f"mails of {mbox}: {done.stdout[-1000:]} {done.stderr[-1000:]}")

    def page(self, msgid: str) -> str:
        """A patch's web page, by its Message-ID (as Patchwork links it: without <>)."""
        return f"{self.base}/project/{self.project}/patch/{urllib.parse.quote(msgid.strip('<>'), safe='@')}/"

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.base}{path}", timeout=20) as answer:
            return json.load(answer)

    def patch_id(self, msgid: str) -> int:
        query = urllib.parse.urlencode({"project": self.project, "msgid": msgid.strip("<>")})
        found = self.get(f"/api/patches/?{query}")
        assert len(found) == 1, found
        return int(found[0]["id"])

    def checks(self, patch_id: int) -> list[dict[str, Any]]:
        """The checks stored on a patch, oldest first (Patchwork lists them by id)."""
        found: list[dict[str, Any]] = self.get(f"/api/patches/{patch_id}/checks/")
        return found

    def _answers(self) -> bool:
        try:
            self.get("/api/")
        except (OSError, urllib.error.URLError, ValueError):
            return False
        return True


def as_posted(message: bytes, msgid: str, reply_to: str = "") -> bytes:
    """A `git format-patch` message as a list delivers it: with a Message-Id (Patchwork needs one),
    threaded under ``reply_to``, from an address with a dotted domain (Patchwork refuses others)."""
    head, sep, body = message.partition(b"\n\n")
    head = re.sub(rb"(?m)^From: (.*)<[^>@]*@[^>.]*>$", rb"From: \1<lab@example.org>", head)
    head += f"\nMessage-Id: {msgid}".encode()
    if reply_to:
        head += f"\nIn-Reply-To: {reply_to}\nReferences: {reply_to}".encode()
    return head + sep + body
