"""The netfilter continuity lab: does a QEMU netfilter keep mirroring frames while the VM migrates?"""

__version__ = "0.1.0"
