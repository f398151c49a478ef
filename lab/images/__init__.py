"""The lab's images, built on a Docker engine (through lab.engine) with live progress.

    base     Debian, from debootstrap + import (no registry needed) or from a registry
    qemu     QEMU built from a profile's tree (x86_64-softmmu, what tap/virtio-net/migration need)
    qemu-series  a profile's series on top of a qemu builder: built in a container of the builder,
             only the binary kept (images/series)
    qemu-tree    a profile's own tree (a local checkout, a git commit) that descends from a builder's
             tree: its diff built the same way, in seconds instead of a full compile (lab.upstream.gittree)
    guest    Debian's cloud kernel + a busybox initramfs that brings eth0 up
    host     the runtime's first stage (packages, sshd): built while QEMU compiles
    runtime  a lab host: the built QEMU, the guest, firmware, tcpdump, iproute2, the in-host helpers

Every tag carries a digest of what went into the image (its build context and arguments), so an
image present under its tag is current and is reused as it is; Docker's layer cache covers the rest.
With ``images.registry`` set, an image the engine lacks is pulled from there under the same tag
before it would be built (``ImageSet.image_source`` says which way each came).
Every build records how long each of its steps took (``ImageSet.build_steps``).

The package, in the order a build reads it: ``sources`` (the series and the QEMU tree a profile
builds, the builders' trees), ``base`` (Debian by debootstrap or from a registry, the mirror),
``build`` (contexts, streams, steps, what a build in a container takes and gives) and ``builder``
(``ImageBuilder.ensure``: every image of a profile present, pulled or built). Each speaks to the
engine through lab.engine alone.
"""

from lab.images.build import (
    AGENTS_DIR,
    IMAGES_DIR,
    LAYER_RE,
    BuildEvent,
    BuildStream,
    Context,
    Progress,
)
from lab.images.builder import ImageBuilder, ImageSet
from lab.images.sources import (
    BUILDER_TREES,
    TreeSource,
    add_checkout,
    check_local_series,
    forget,
    load_series,
    local_tree,
    qemu_build_args,
)

__all__ = ["AGENTS_DIR", "BUILDER_TREES", "IMAGES_DIR", "LAYER_RE", "BuildEvent", "BuildStream", "Context",
           "ImageBuilder", "ImageSet", "Progress", "TreeSource", "add_checkout", "check_local_series", "forget",
           "load_series",
           "local_tree", "qemu_build_args"]
