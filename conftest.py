"""The lab's fixtures come from its pytest plugin (lab/pytest_plugin.py), installed with the package:
the same ones any other repository gets with `pip install` of the lab."""
