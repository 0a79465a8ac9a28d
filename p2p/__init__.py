"""Peer-to-peer networking: everything that touches libp2p, and the wire protocols' schema.

Hosts, mDNS, the DHT, framing, typed errors, the protocol server and the requester live here;
what a share answers and what a client does with the answers live in ``peerlight.node``. This
package imports nothing of the node, and never ``peerlight.recommender``: the user's ratings
and preference model must never reach the network.
"""
