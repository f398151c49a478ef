"""lab.engine.ssh's ssh_config, read back by the real OpenSSH client."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from lab.engine.ssh import LabKeys, proxy_command, write_config
from lab.errors import LabError
from lab.kept import KeptLab

needs_ssh = pytest.mark.skipif(shutil.which("ssh") is None, reason="no OpenSSH client on this machine")


def identity_ssh_uses(config: Path) -> str:
    """The identity file ssh resolves for `primary` (the proxy command fails at once, after ssh has
    named its identity files in its debug output)."""
    config.write_text(config.read_text().replace("ProxyCommand docker exec", "ProxyCommand false #"))
    done = subprocess.run(["ssh", "-v", "-F", str(config), "-o", "BatchMode=yes", "primary", "true"],
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    names = [line.split("identity file ", 1)[1].rsplit(" type ", 1)[0] for line in done.stderr.splitlines()
             if "identity file " in line and "-cert type" not in line]
    assert names, done.stderr
    return names[0]


@needs_ssh
@pytest.mark.parametrize("folder", ["plain", "with space", "per%cent", "it's", "tab%d%%h"])
def test_ssh_reads_back_the_identity_file_written(tmp_path: Path, folder: str) -> None:
    keys = LabKeys(tmp_path / folder)
    config = write_config(tmp_path / "ssh_config", keys, {"primary": "nfcl-primary", "secondary": "nfcl-secondary"})
    assert identity_ssh_uses(config) == str(keys.private.resolve())


@pytest.mark.parametrize("folder", ['quo"te', "line\nbreak", "cr\rhere"])
def test_a_path_ssh_config_cannot_hold_is_refused_in_one_line(tmp_path: Path, folder: str) -> None:
    keys = LabKeys(tmp_path / folder)
    with pytest.raises(LabError) as caught:
        write_config(tmp_path / "ssh_config", keys, {"primary": "nfcl-primary"})
    assert "cannot be written into an ssh_config" in str(caught.value)
    assert "\n" not in str(caught.value)
    with pytest.raises(LabError):
        keys.ensure()  # before a key is made, and so before any host starts
    assert not (tmp_path / folder).exists()


def test_a_host_on_another_engine_is_reached_through_that_engine(tmp_path: Path) -> None:
    assert proxy_command("nfcl-x-primary").startswith("docker exec -i nfcl-x-primary ")
    assert proxy_command("nfcl-x-primary", "ssh://nfcl-engine2").startswith(
        "docker -H ssh://nfcl-engine2 exec -i nfcl-x-primary ")
    keys = LabKeys(tmp_path)
    keys.ensure()
    text = write_config(tmp_path / "ssh_config", keys, {"primary": "p", "secondary": "s"},
                        {"primary": "ssh://nfcl-engine2", "secondary": ""}).read_text()
    assert "ProxyCommand docker -H ssh://nfcl-engine2 exec -i p " in text
    assert "ProxyCommand docker exec -i s " in text


def test_a_kept_labs_state_from_before_engines_were_recorded_is_on_the_default_engine() -> None:
    lab = KeptLab(name="n", profile="p", scenario="s", image="i", accel="tcg", rundir="/tmp/x",
                  containers={"primary": "c"}, ssh_config="", started=0.0)
    sentinel = object()
    assert lab.engine_url("primary") == "" and lab.engine("primary", sentinel) is sentinel  # type: ignore[arg-type]
