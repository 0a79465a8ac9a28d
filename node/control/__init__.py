"""The local control API: how the CLI (or any local program) drives the daemon.

``protocol`` is the wire format shared by both ends and imports nothing heavy;
``server`` (trio) and ``client`` (blocking, for a fast CLI) are its two ends.
"""
