"""This node as a client of other nodes' shares: remembering them, copying their catalogs,
searching them and downloading from them (``client.PeerClient`` puts the parts together)."""
