"""The node's catalog: one SQLite database holding everything the node knows.

``migrations`` defines the schema, ``database`` runs SQLite from trio (one writer thread,
concurrent readers), ``libraries`` is the first repository of typed operations on it.
"""

from .database import Catalog, CatalogError
from .migrations import SchemaVersionError

__all__ = ["Catalog", "CatalogError", "SchemaVersionError"]
