"""Images a test builds for a profile of its own (a git tree, a checked series) have digests of that
run and would pile up run after run: the test removes them, and `lab clean`'s pruning takes the
guests saved from them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import docker
import docker.errors

from lab import statefile
from lab.config import LabConfig
from lab.engine import Engine, resources
from lab.vm import snapshot


def _tags(client: docker.DockerClient) -> dict[str, str]:
    return {tag: str(image.id) for image in client.images.list(filters={"label": f"{resources.MANAGED}=true"})
            for tag in image.tags}


@contextlib.contextmanager
def removed_after(client: docker.DockerClient, cfg: LabConfig, tag_start: str) -> Iterator[None]:
    """Removes the images tagged ``<prefix>/<image>:<tag_start>...`` made inside the block, then
    the guests saved from them."""
    before = _tags(client)
    try:
        yield
    finally:
        made = {tag: image_id for tag, image_id in _tags(client).items()
                if tag not in before and tag.split(":", 1)[-1].startswith(tag_start)}
        for tag in made:
            with contextlib.suppress(docker.errors.DockerException):
                client.images.remove(tag, force=True)
        # An image another tag still holds (one of an earlier run, the same build) stays, with its guest.
        gone = set(made.values()) - set(_tags(client).values())
        folder = cfg.state_root / snapshot.FOLDER
        saved = {name for name, image_id in statefile.read(folder / snapshot.INDEX).items() if image_id in gone}
        snapshot.prune(Engine(client), cfg)
        assert not [name for name in saved if (folder / name).exists()], "a guest saved from a removed image stayed"
