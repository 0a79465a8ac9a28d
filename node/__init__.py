"""The Peerlight node: configuration, identity, catalog, control API and the daemon.

This package's ``__init__`` stays empty on purpose: the CLI imports small pieces of it
(the control protocol, configuration) and must start fast, without pulling in the
daemon's heavier dependencies.
"""
