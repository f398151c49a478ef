"""The lab's one boundary with its transports: the Docker SDK, SSH (paramiko) and HTTP to engines.

Nothing outside this package imports docker, paramiko, requests or urllib3 (tests/unit/test_layers.py
reads the imports and says so). What the rest of the lab needs of an engine is a method of
``Engine``; what goes wrong on the way is an ``EngineError`` naming the engine and what to do, or,
for a command in a running cell, a ``ScenarioError``.

- ``engine``: an engine, its hosts (one backend per way of reaching a host's run folder) and the
  lab's pair of hosts;
- ``transport``: the client dialled, the one retry, the transport's errors turned into the lab's;
- ``remote``: a host's files and sockets through the engine's API, for an engine on another machine;
- ``resources``: the labels on what the lab creates, and finding and removing it;
- ``ssh``: the lab's key pair and SSH into its hosts.
"""

from lab.engine.engine import (
    KVM,
    TUN,
    ContainerInfo,
    CopiedHost,
    DockerHost,
    Engine,
    HostSpec,
    ImageInfo,
    LabHosts,
    SharedHost,
    machine_address,
)

__all__ = ["KVM", "TUN", "ContainerInfo", "CopiedHost", "DockerHost", "Engine", "HostSpec", "ImageInfo", "LabHosts",
           "SharedHost", "machine_address"]
