"""Data Servers: the node's shares served over libp2p, and the client side that uses peers' shares."""
