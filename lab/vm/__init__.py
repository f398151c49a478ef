"""QEMU in a lab host and what runs beside it: its command line and monitor, the migration with its
hold, the guest's record, the test traffic, the capture points, and the saved guest."""
