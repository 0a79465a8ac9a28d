"""Local embedding models: media encoders and importance-ordered (Matryoshka) adapters.

Knows nothing of ``peerlight.node``, ``peerlight.p2p`` or ``peerlight.cli``: it turns media
into vectors and nothing else, so it can be used and tested on its own.
"""
