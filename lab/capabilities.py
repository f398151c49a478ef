"""What a build offers: the properties of its netfilters, asked of the built QEMU over QMP.

A scenario that sets a property the build lacks (say ``enable_when_stopped`` on a QEMU without the
series that adds it) is refused before any guest starts, with the list of what the build has.
"""

from __future__ import annotations

import json

import docker
import docker.errors

from lab import resources
from lab.config import FILTERS
from lab.errors import LabError
from lab.qemu import BINARY


def filter_properties(client: docker.DockerClient, image: str, lab: str) -> dict[str, list[str]]:
    """``{filter type: [property, ...]}`` from ``qom-list-properties`` of the image's QEMU."""
    commands: list[dict[str, object]] = [{"execute": "qmp_capabilities"}]
    commands += [{"execute": "qom-list-properties", "arguments": {"typename": f}, "id": f} for f in FILTERS]
    commands += [{"execute": "quit"}]
    script = "".join(json.dumps(c) + "\n" for c in commands)
    try:
        output = client.containers.run(
            image, ["sh", "-c", f"printf '%s' '{script}' | timeout 30 {BINARY} -machine none -nodefaults "
                                "-display none -qmp stdio"],
            remove=True, network_mode="none", labels=resources.labels(lab, role="capabilities"))
    except docker.errors.ContainerError as exc:
        raise LabError(f"cannot ask {image}'s QEMU for its netfilters: {exc.stderr!r}") from exc
    found: dict[str, list[str]] = {}
    for line in output.decode(errors="replace").splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("id") in FILTERS and isinstance(msg.get("return"), list):
            found[msg["id"]] = sorted(p["name"] for p in msg["return"])
    missing = [f for f in FILTERS if f not in found]
    if missing:
        raise LabError(f"{image}'s QEMU does not know {', '.join(missing)} (is it built with netfilters?)")
    return found


def unsupported(properties: dict[str, list[str]], qom_type: str, wanted: tuple[tuple[str, str], ...]) -> list[str]:
    return [name for name, _value in wanted if name not in properties.get(qom_type, [])]
