"""Who may search, browse or fetch a share: grants and signed capability tokens (Ed25519)."""
