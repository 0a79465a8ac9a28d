"""Serving shares: the Data Servers, one libp2p host per share, their gate and their protocols."""
