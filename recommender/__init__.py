"""The purely local preference model, trained on the user's own ratings.

Never imports ``peerlight.p2p``: ratings never leave the machine.
"""
