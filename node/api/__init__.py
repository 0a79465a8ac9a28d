"""The control API's methods: what the CLI (or any local program) can ask of the daemon.

Each module is one group: a small class over the state it needs, exposing ``methods()``, a
name -> handler table that the daemon merges and hands to the control server. Handlers
validate their params and raise the protocol's typed errors; anything else becomes an
internal error.
"""
