"""Shared test helpers, importable as ``support.<module>`` (setup.cfg puts ``test/`` on pytest's path)."""
