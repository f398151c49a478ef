# The devices the lab's QEMU is built with (configure --without-default-devices
# --with-devices-x86_64=lab): the boards a lab host may use (pc, q35, microvm) and the NIC the guest
# has. Each board brings what it selects; what a board only implies (VGA, USB, IPMI, TPM, sound,
# storage controllers...) is left out, which saves about a fifth of the compile.
CONFIG_I440FX=y
CONFIG_Q35=y
CONFIG_MICROVM=y
CONFIG_VIRTIO_PCI=y
CONFIG_VIRTIO_NET=y
# The boards' ACPI tables call into CXL (ACPI_CXL), which only default devices would bring; CXL needs
# the PCI expander bridge, and its mailbox code the type-3 memory device.
CONFIG_CXL=y
CONFIG_PXB=y
CONFIG_CXL_MEM_DEVICE=y
