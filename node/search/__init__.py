"""Local search: semantic (FAISS over stored vectors), full text (SQLite FTS5, BM25), and hybrid."""
