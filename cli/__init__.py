"""The ``peerlight`` command: a thin, fast-starting client of the daemon's control socket.

Never imports torch or ``peerlight.embeddings``; the daemon does the heavy work.
"""
