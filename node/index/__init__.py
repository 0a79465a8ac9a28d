"""Library indexing: walking folders, hashing, type detection, metadata, embeddings."""
