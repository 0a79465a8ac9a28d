"""Peer-to-peer networking: libp2p hosts, Data Servers, discovery (mDNS, Kademlia DHT).

Arrives with the Data Server milestone. Never imports ``peerlight.recommender``: the user's
ratings and preference model must never reach the network.
"""
