"""Protocol ids of a Data Server (see ``docs/protocol.md``). A new major version is a new id."""

MANIFEST = "/peerlight/manifest/1.0.0"
QUERY = "/peerlight/query/1.0.0"
FETCH = "/peerlight/fetch/1.0.0"
CATALOG = "/peerlight/catalog/1.0.0"
PREVIEW = "/peerlight/preview/1.0.0"
ADAPTER = "/peerlight/adapter/1.0.0"
REDEEM = "/peerlight/redeem/1.0.0"  # an open invite's token in, a token bound to the asking peer out

CHUNK_BYTES = 1024 * 1024  # fetch: data per frame, each with its own BLAKE3
MAX_QUERY_K = 200
MAX_VECTOR_VALUES = 4096
MAX_CATALOG_PAGE = 1000
MAX_PREFIX_K = 256
PAIR = "/peerlight/pair/1.0.0"  # two nodes of one user link up by a short code (not served by shares)
