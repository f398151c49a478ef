"""What a build offers: the properties of its netfilters, asked of the built QEMU over QMP.

A scenario that sets a property the build lacks (say ``enable_when_stopped`` on a QEMU without the
series that adds it) is refused before any guest starts, with the list of what the build has.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from lab import statefile
from lab.config import FILTERS, LabConfig
from lab.engine import Engine
from lab.errors import LabError, ScenarioError
from lab.namespace import Namespace
from lab.vm.qemu import BINARY

CACHE_NAME = "filter-properties.json"  # in the state folder: image id -> QEMU's answer


def filter_properties(engine: Engine, image: str, ns: Namespace, cache: Path | None = None) -> dict[str, list[str]]:
    """``{filter type: [property, ...]}`` from ``qom-list-properties`` of the image's QEMU, or, for
    an image asked before, from ``cache`` (they are the image's: kept by its id)."""
    image_id = engine.image_id(image) if cache is not None else ""
    known = statefile.read(cache) if cache is not None else {}
    kept = _kept(known.get(image_id, ""))
    if kept is not None:
        return kept
    found = ask_properties(engine, image, ns)
    if cache is not None:
        statefile.write(cache, known | {image_id: json.dumps(found)})
    return found


def _kept(text: str) -> dict[str, list[str]] | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or not all(isinstance(data.get(f), list) for f in FILTERS):
        return None
    return {str(f): [str(p) for p in props] for f, props in data.items()}


def ask_properties(engine: Engine, image: str, ns: Namespace) -> dict[str, list[str]]:
    commands: list[dict[str, object]] = [{"execute": "qmp_capabilities"}]
    commands += [{"execute": "qom-list-properties", "arguments": {"typename": f}, "id": f} for f in FILTERS]
    commands += [{"execute": "quit"}]
    script = "".join(json.dumps(c) + "\n" for c in commands)
    try:
        with engine.throwaway(image, "capabilities", ns, devices=()) as host:
            result = host.run(["sh", "-c", f"printf '%s' {shlex.quote(script)} | {BINARY} -machine none "
                                           "-nodefaults -display none -qmp stdio"], timeout=30)
    except ScenarioError as exc:
        raise LabError(f"cannot ask {image}'s QEMU for its netfilters: {exc}") from exc
    found = parse_properties(result.stdout)
    missing = [f for f in FILTERS if f not in found]
    if missing:
        raise LabError(f"{image}'s QEMU does not know {', '.join(missing)} (is it built with netfilters?"
                       f" QEMU said: {(result.stderr or result.stdout).strip()[-200:]})")
    return found


def parse_properties(output: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in output.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if isinstance(msg, dict) and msg.get("id") in FILTERS and isinstance(msg.get("return"), list):
            found[msg["id"]] = sorted(str(p.get("name")) for p in msg["return"] if isinstance(p, dict))
    return found


def forget(cfg: LabConfig) -> None:
    """The builds' answers go with their images (`lab clean --images`)."""
    (cfg.state_root / CACHE_NAME).unlink(missing_ok=True)
