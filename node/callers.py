"""Who is asking, and what they may see: the request path's answer to "for whom?".

Every API method receives a :class:`Caller`. Today the control socket only has the local
user, who sees everything and gets local paths; a Data Server will hand the same methods a
peer, whose :class:`Scope` is its share (libraries, folders, kinds of media) and who gets
items by content hash, never paths on this machine, and never the user's ratings. Scopes
are applied inside retrieval (the SQL of full-text search, a selector inside the vector
search), so what a caller may not see is never looked at on its behalf.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Scope:
    """The items a caller may see. The defaults mean everything."""

    libraries: frozenset[int] | None = None  # only items with a file in these libraries (None: any)
    folders: tuple[str, ...] = ()  # only items with a file under one of these folders (empty: anywhere)
    modalities: tuple[str, ...] = ()  # only these kinds of media (empty: every kind)

    @property
    def is_everything(self) -> bool:
        return self == Scope()


@dataclass(frozen=True)
class Caller:
    kind: str  # "local" (the user, through the control socket) | "peer"
    peer_id: str | None = None
    scope: Scope = field(default_factory=Scope)

    @classmethod
    def local(cls) -> Caller:
        return cls("local")

    @property
    def is_local(self) -> bool:
        return self.kind == "local"
