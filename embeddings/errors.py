"""Errors of the embedding models."""


class WeightsMissing(Exception):
    """A model's weights are not on this machine (and downloading is off or failed).

    The message says where they were looked for and how to provide them; the node keeps
    indexing metadata and embeds the items once the weights appear.
    """


class DecodeError(Exception):
    """A media file could not be decoded for embedding (corrupt, truncated, unsupported)."""
