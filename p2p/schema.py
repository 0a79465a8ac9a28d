"""Every Peerlight wire protocol in one table: its id, its messages, their fields and limits.

The server checks each request against its protocol's request message after the share's
gate has let it in and before the handler sees it, and the client checks each reply frame
against the reply message before it keeps a byte of it, so both sides agree by construction, and ``docs/protocol.md``
states the limits from this table (:func:`markdown` writes its field tables; a test checks
that the page holds them as written). Adding a protocol means adding a :class:`Spec` here
and a handler, nothing else.

Two ways to check a message, one per direction:

- :meth:`Message.check` (a request, on the server): strict. A value of the wrong type or
  out of its limit is ``malformed``, naming the field and its limit; defaults are filled in.
  Unknown keys are ignored (a newer client may send more), except where ignoring one would
  widen an answer (an unknown filter would return what the client asked to leave out).
- :meth:`Message.keep` (a reply, on the client): forgiving, never trusting. Text loses
  control and bidi characters and is cut to its length; a value out of range is dropped;
  an entry of a list or map that is not valid is left out; only a required field that is
  missing or invalid makes the whole reply ``malformed``.
"""

from __future__ import annotations

import copy
import itertools
import re
from dataclasses import dataclass
from typing import Any

from . import fields
from .errors import Forbidden, Malformed
from .summaries import MAX_SUMMARY_BYTES

MISSING: Any = object()

MODALITIES = ("image", "audio", "video", "text")
SPACES = ("image", "text", "audio")  # the vector spaces of a node's models
CAPABILITIES = ("search", "browse", "fetch")  # what a grant or the public may do
SCOPES = ("local", "lan", "global")
LEVELS = ("public", "members", "devices")
MODES = ("semantic", "text", "hybrid")
FEATURES = ("manifest", "query.text", "query.vector", "fetch.range", "catalog", "preview", "adapter", "summary")

CHUNK_BYTES = 1024 * 1024  # fetch: file data per frame, each frame with its own BLAKE3
MAX_TOKEN_BYTES = 1024
MAX_QUERY_K = 200
MAX_VECTOR_VALUES = 4096
MAX_CATALOG_PAGE = 1000
MAX_PREFIX_K = 256
MAX_ADAPTER_BYTES = 32 * 1024 * 1024
REPLY_FRAME_BYTES = 8 * 1024 * 1024  # what a client reads of one answer frame


class Invalid(Exception):
    """A value that is not what its field allows: ``path`` names the field, ``reason`` its limit."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}" if path else reason)
        self.path = path
        self.reason = reason


class Disallowed(Invalid):
    """A field peers may not send at all (it is answered ``forbidden``, not ``malformed``)."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _join(path: str, key: str | int) -> str:
    return f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}" if path else key


# --- field types: each checks strictly (check) or keeps what is safe (keep, None: nothing) ---


@dataclass(frozen=True)
class Integer:
    minimum: int = 0
    maximum: int = fields.INT64_MAX

    def describe(self) -> str:
        return f"integer {self.minimum}…{self.maximum}" if self.maximum < fields.INT64_MAX else f"integer ≥ {self.minimum}"

    def check(self, value: Any, path: str) -> int:
        if not _is_int(value) or not self.minimum <= value <= self.maximum:
            raise Invalid(path, f"an {self.describe()}")
        return value

    def keep(self, value: Any) -> int | None:
        return value if _is_int(value) and self.minimum <= value <= self.maximum else None


@dataclass(frozen=True)
class Number:
    """A finite number (never NaN or an infinity) within [minimum, maximum]."""

    minimum: float
    maximum: float

    def describe(self) -> str:
        return f"finite number {self.minimum:g}…{self.maximum:g}"

    def check(self, value: Any, path: str) -> float | int:
        kept = self.keep(value)
        if kept is None:
            raise Invalid(path, f"a {self.describe()}")
        return kept

    def keep(self, value: Any) -> float | int | None:
        return fields.finite(value, self.minimum, self.maximum)


@dataclass(frozen=True)
class Text:
    """A UTF-8 string of at most ``max_chars`` characters (one of ``choices``, when given).

    Kept from a peer: control, formatting (bidi) and unassigned characters are removed and it
    is cut to its length; with ``exact``, a string that this would change is dropped instead
    (an identifier must be compared as sent, never a cleaned variant of it)."""

    max_chars: int
    choices: tuple[str, ...] = ()
    exact: bool = False

    def describe(self) -> str:
        return "one of " + ", ".join(f"`{c}`" for c in self.choices) if self.choices else f"text ≤ {self.max_chars} characters"

    def check(self, value: Any, path: str) -> str:
        if not isinstance(value, str) or len(value) > self.max_chars or (self.choices and value not in self.choices):
            raise Invalid(path, self.describe())
        return value

    def keep(self, value: Any) -> str | None:
        if self.choices:
            return value if isinstance(value, str) and value in self.choices else None
        kept = fields.plain_text(value, self.max_chars)
        if not kept or (self.exact and kept != value):
            return None
        return kept


@dataclass(frozen=True)
class Hash:
    """A BLAKE3 content hash: 64 hex digits. Accepted in either case, always sent in lower case."""

    PATTERN = re.compile(r"^[0-9a-fA-F]{64}$")

    def describe(self) -> str:
        return "64 hex digits (BLAKE3)"

    def check(self, value: Any, path: str) -> str:
        if not isinstance(value, str) or not self.PATTERN.match(value):
            raise Invalid(path, self.describe())
        return value.lower()

    def keep(self, value: Any) -> str | None:
        return fields.content_hash(value)


@dataclass(frozen=True)
class Binary:
    """A msgpack ``bin`` of at most ``max_bytes`` (exactly ``size``, or a multiple of ``multiple_of``)."""

    max_bytes: int
    multiple_of: int = 1
    size: int | None = None

    def describe(self) -> str:
        if self.size is not None:
            return f"bin of {self.size} bytes"
        step = f", a multiple of {self.multiple_of}" if self.multiple_of > 1 else ""
        return f"bin ≤ {_bytes(self.max_bytes)}{step}"

    def check(self, value: Any, path: str) -> bytes:
        kept = self.keep(value)
        if kept is None:
            raise Invalid(path, self.describe())
        return kept

    def keep(self, value: Any) -> bytes | None:
        if not isinstance(value, bytes) or len(value) > self.max_bytes or len(value) % self.multiple_of:
            return None
        return value if self.size is None or len(value) == self.size else None


@dataclass(frozen=True)
class Boolean:
    def describe(self) -> str:
        return "boolean"

    def check(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise Invalid(path, "a boolean")
        return value

    def keep(self, value: Any) -> bool | None:
        return value if isinstance(value, bool) else None


@dataclass(frozen=True)
class Metadata:
    """A small map of plain values (a peer's metadata of an item), bounded entry by entry."""

    max_entries: int = 32
    max_key: int = 40
    max_text: int = 1000

    def describe(self) -> str:
        return f"map of ≤ {self.max_entries} entries: key text ≤ {self.max_key}, value text ≤ {self.max_text} or a finite number"

    def check(self, value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise Invalid(path, "a map")
        return self.keep(value)

    def keep(self, value: Any) -> dict[str, Any]:
        return fields.plain_map(value, max_entries=self.max_entries, max_key=self.max_key, max_text=self.max_text)


@dataclass(frozen=True)
class ListOf:
    item: Any
    max_items: int
    distinct: bool = False

    def describe(self) -> str:
        return f"list of ≤ {self.max_items} × {_short(self.item)}"

    def check(self, value: Any, path: str) -> list[Any]:
        if not isinstance(value, list) or len(value) > self.max_items:
            raise Invalid(path, f"a list of at most {self.max_items}")
        checked = [self.item.check(entry, _join(path, i)) for i, entry in enumerate(value)]
        if self.distinct and len(set(checked)) != len(checked):
            raise Invalid(path, "a list of distinct values")
        return checked

    def keep(self, value: Any) -> list[Any] | None:
        """The valid entries among the first ``max_items``; the rest are left out."""
        if not isinstance(value, list):
            return None
        kept = [entry for entry in (self.item.keep(v) for v in value[: self.max_items]) if entry is not None]
        return list(dict.fromkeys(kept)) if self.distinct else kept


@dataclass(frozen=True)
class MapOf:
    key: Any
    value: Any
    max_entries: int

    def describe(self) -> str:
        return f"map of ≤ {self.max_entries}: {_short(self.key)} → {_short(self.value)}"

    def check(self, value: Any, path: str) -> dict[Any, Any]:
        if not isinstance(value, dict) or len(value) > self.max_entries:
            raise Invalid(path, f"a map of at most {self.max_entries} entries")
        return {self.key.check(k, path): self.value.check(v, _join(path, str(k))) for k, v in value.items()}

    def keep(self, value: Any) -> dict[Any, Any] | None:
        if not isinstance(value, dict):
            return None
        kept = {}
        for k, v in itertools.islice(value.items(), self.max_entries):
            key, item = self.key.keep(k), self.value.keep(v)
            if key is not None and item is not None:
                kept[key] = item
        return kept


@dataclass(frozen=True)
class NotForPeers:
    """A field only the node's own user may use (a rating filter, a folder): refused from a peer."""

    reason: str

    def describe(self) -> str:
        return "refused (`forbidden`)"

    def check(self, value: Any, path: str) -> Any:
        raise Disallowed(path, self.reason)

    def keep(self, value: Any) -> None:
        return None


@dataclass(frozen=True)
class Field:
    type: Any
    required: bool = False
    default: Any = MISSING  # filled in by check() when the field is absent
    nullable: bool = False  # nil is a value (e.g. ``length: nil``: to the end)
    doc: str = ""


@dataclass(frozen=True)
class Message:
    """A msgpack map: its fields, and whether keys it does not name are refused."""

    fields: dict[str, Field]
    refuse_unknown: bool = False
    doc: str = ""

    def describe(self) -> str:
        return "map"

    def check(self, value: Any, path: str = "") -> dict[str, Any]:
        if not isinstance(value, dict):
            raise Invalid(path, "a map")
        if self.refuse_unknown:
            unknown = sorted(str(k)[:40] for k in value if k not in self.fields)
            if unknown:
                raise Invalid(path or "message", f"unknown keys: {', '.join(unknown)[:200]}")
        checked: dict[str, Any] = {}
        for name, spec in self.fields.items():
            here = _join(path, name)
            if name not in value:
                if spec.required:
                    raise Invalid(here, f"required ({spec.type.describe()})")
                if spec.default is not MISSING:
                    checked[name] = _fresh(spec)
                continue
            raw = value[name]
            checked[name] = None if raw is None and spec.nullable else spec.type.check(raw, here)
        return checked

    def keep(self, value: Any) -> dict[str, Any] | None:
        """The fields of a peer's map that are valid; None when a required one is not."""
        if not isinstance(value, dict):
            return None
        kept: dict[str, Any] = {}
        for name, spec in self.fields.items():
            raw = value.get(name, MISSING)
            item = None if raw is MISSING or raw is None else spec.type.keep(raw)
            if item is None:
                if spec.required:
                    return None
                if spec.default is not MISSING:
                    kept[name] = _fresh(spec)
                continue
            kept[name] = item
        return kept


def _fresh(spec: Field) -> Any:
    """A field's default as a new value (never the shared one), a map's own defaults filled in."""
    if isinstance(spec.type, Message):
        return spec.type.check(dict(spec.default))
    return copy.copy(spec.default)


@dataclass(frozen=True, eq=False)
class Spec:
    """One protocol: what a request and its answer frames may hold, and what serving it costs."""

    name: str
    version: str
    request: Message
    replies: tuple[Message, ...]  # the answer's frames, in order (fetch: header, data…, end)
    capability: str | None = None  # what a grant (or the public) must allow; None: being let in is enough
    max_request_bytes: int = 1024
    max_reply_bytes: int = REPLY_FRAME_BYTES  # what a client reads of one answer frame
    streamed: bool = False  # answered in several frames
    costly: bool = False  # computing the answer takes one of the node's few work slots
    buffer_bytes: int = 0  # memory a running answer holds, from the node's transfer budget
    served_by_shares: bool = True
    doc: str = ""

    @property
    def id(self) -> str:
        return f"/peerlight/{self.name}/{self.version}"

    def __repr__(self) -> str:
        return f"Spec({self.id!r})"

    def check_request(self, body: dict[str, Any]) -> dict[str, Any]:
        """The request's fields, checked and with defaults; ``malformed`` naming the field otherwise."""
        try:
            return self.request.check(body)
        except Disallowed as exc:
            raise Forbidden(str(exc), {"field": exc.path}) from None
        except Invalid as exc:
            raise Malformed(str(exc), {"field": exc.path}) from None

    def keep_reply(self, frame: dict[str, Any], message: Message | None = None) -> dict[str, Any]:
        """A reply frame's valid fields (``message``: which of the answer's frames); ``malformed``
        when a required field is missing or invalid."""
        message = message or self.replies[0]
        kept = message.keep(frame)
        if kept is None:
            missing = [n for n, f in message.fields.items() if f.required and (frame.get(n) is None or f.type.keep(frame[n]) is None)]
            raise Malformed(f"a {self.name} answer without a valid {', '.join(missing) or 'body'}", {"field": ",".join(missing)})
        return kept


def _short(kind: Any) -> str:
    return kind.describe() if not isinstance(kind, Message) else "map (below)"


def _bytes(n: int) -> str:
    for unit, size in (("MiB", 1024 * 1024), ("KiB", 1024)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


# --- the protocols ---

TOKEN = Field(Binary(MAX_TOKEN_BYTES), doc="a grant's token; required by a `members` share")
HASH_FIELD = Field(Hash(), required=True, doc="the item's content hash")
COUNT = Integer()

FILTERS = Message(
    {
        "modality": Field(ListOf(Text(8, MODALITIES), len(MODALITIES)), default=[], doc="kinds of media wanted (all if empty)"),
        "date_from": Field(Text(40), nullable=True, doc="ISO 8601 date or time, inclusive"),
        "date_to": Field(Text(40), nullable=True, doc="ISO 8601 date or time, inclusive"),
        "size_min": Field(COUNT, nullable=True, doc="bytes"),
        "size_max": Field(COUNT, nullable=True, doc="bytes"),
        **{
            name: Field(NotForPeers("ratings and folders never leave a node: this filter is for its own user only"))
            for name in ("rating_min", "rating_max", "folder")
        },
    },
    refuse_unknown=True,
    doc="Unknown filters are refused, not ignored: ignoring one would return items the client asked to leave out.",
)

MATCH = Message(
    {
        "segment": Field(Number(0, 1e12), doc="the chunk or moment: 1, 2, … (0: the whole item)"),
        "start": Field(Number(0, 1e12), doc="video: seconds from its start; document: the passage's first character"),
        "end": Field(Number(0, 1e12), doc="video: seconds; document: the character after the passage"),
        "chunk_start": Field(Number(0, 1e12), doc="document: the matching chunk's first character"),
        "chunk_end": Field(Number(0, 1e12), doc="document: the character after the chunk"),
        "passage": Field(Text(2000), doc="document: the sentences that match best"),
    }
)

RESULT = Message(
    {
        "content_hash": Field(Hash(), required=True),
        "name": Field(Text(255), required=True, doc="the file's name (never a path)"),
        "modality": Field(Text(8, MODALITIES), required=True),
        "mime": Field(Text(100)),
        "size": Field(COUNT, doc="bytes"),
        "score": Field(Number(-1e6, 1e6), doc="the hybrid score as a z-score of the share's own cosines"),
        "similarity": Field(Number(-1.01, 1.01), doc="cosine of the query and the item's best vector"),
        "text_evidence": Field(Number(-1e6, 1e6)),
        "metadata": Field(Metadata(), default={}),
        "match": Field(MATCH, doc="where in the item the query matched (a video moment, a document's passage)"),
    }
)

MODEL = Message(
    {
        "id": Field(Text(200, exact=True), required=True, doc="the model id (content of its weights, and its adapter)"),
        "dimension": Field(Integer(1, MAX_VECTOR_VALUES)),
        "space": Field(Text(8, SPACES)),
    }
)

CATALOG_ITEM = Message(
    {
        "content_hash": Field(Hash(), required=True),
        "name": Field(Text(255), required=True),
        "modality": Field(Text(8, MODALITIES), required=True),
        "mime": Field(Text(100)),
        "size": Field(COUNT, required=True),
        "metadata": Field(Metadata(), default={}),
        "vectors": Field(
            MapOf(Text(200, exact=True), Binary(2 * MAX_PREFIX_K, multiple_of=2), 4),
            default={},
            doc="model id → the renormalised K-prefix, K float16 values, little-endian",
        ),
    }
)

MANIFEST = Spec(
    "manifest",
    "1.0.0",
    Message({"token": TOKEN}),
    (
        Message(
            {
                "name": Field(Text(200), doc="the share's name"),
                "scope": Field(Text(8, SCOPES)),
                "permission": Field(Text(8, LEVELS)),
                "public_can": Field(
                    ListOf(Text(8, CAPABILITIES), len(CAPABILITIES), distinct=True),
                    default=[],
                    doc="what a `public` share lets anyone do without a grant",
                ),
                "items": Field(COUNT, doc="items the share serves to this peer"),
                "counts": Field(MapOf(Text(8, MODALITIES), COUNT, len(MODALITIES)), default={}, doc="items per kind"),
                "models": Field(ListOf(MODEL, 16), default=[], doc="the vector spaces of its items"),
                "capabilities": Field(ListOf(Text(40), 32), default=[], doc="features it offers"),
                "protocols": Field(ListOf(Text(100), 32), default=[], doc="protocol ids it serves"),
                "chunk_bytes": Field(Integer(1, CHUNK_BYTES), doc="fetch: data bytes per frame"),
            }
        ),
    ),
    doc="What a share offers.",
)

QUERY = Spec(
    "query",
    "1.0.0",
    Message(
        {
            "text": Field(Text(1000), doc="the query, for a share to embed (exactly one of `text` and `vector`)"),
            "mode": Field(Text(8, MODES), default="hybrid", doc="with `text`"),
            "vector": Field(
                Binary(4 * MAX_VECTOR_VALUES, multiple_of=4), doc="a K-prefix of an ordered vector: K float32 values, little-endian, 1 ≤ K ≤ the model's dimension"
            ),
            "model_id": Field(Text(200), doc="with `vector`: the model space it lies in"),
            "k": Field(Integer(1, MAX_QUERY_K), default=20, doc="results wanted"),
            "filters": Field(FILTERS, default={}, doc="see the filters table"),
            "token": TOKEN,
        }
    ),
    (
        Message(
            {
                "results": Field(ListOf(RESULT, MAX_QUERY_K), required=True, doc="best first, one per item"),
                "warnings": Field(ListOf(Text(300), 16), default=[]),
                "took_ms": Field(Number(0, 1e9)),
            }
        ),
    ),
    capability="search",
    max_request_bytes=64 * 1024,
    costly=True,
    doc="Search a share, by text or by a K-prefix vector.",
)

FETCH_HEADER = Message(
    {
        "hash": Field(Hash(), required=True),
        "size": Field(COUNT, required=True, doc="the whole file's bytes"),
        "offset": Field(COUNT, required=True, doc="the first byte sent"),
        "length": Field(COUNT, required=True, doc="bytes sent in all"),
        "chunk_bytes": Field(Integer(1, CHUNK_BYTES)),
    }
)
FETCH_DATA = Message(
    {
        "data": Field(Binary(CHUNK_BYTES), required=True, doc="the next bytes of the range"),
        "hash": Field(Binary(32, size=32), required=True, doc="BLAKE3 of `data`"),
    }
)
FETCH_END = Message({"done": Field(Boolean(), required=True, doc="true")})

FETCH = Spec(
    "fetch",
    "1.0.0",
    Message(
        {
            "hash": HASH_FIELD,
            "offset": Field(COUNT, default=0, doc="the first byte wanted; at most the file's size"),
            "length": Field(COUNT, default=None, nullable=True, doc="bytes wanted; nil: to the end"),
            "token": TOKEN,
        }
    ),
    (FETCH_HEADER, FETCH_DATA, FETCH_END),
    capability="fetch",
    max_request_bytes=4 * 1024,
    max_reply_bytes=CHUNK_BYTES + 1024,
    streamed=True,
    buffer_bytes=8 * CHUNK_BYTES,
    doc="File content by content hash, ranged, each frame verified.",
)

CATALOG = Spec(
    "catalog",
    "1.0.0",
    Message(
        {
            "cursor": Field(COUNT, default=0, doc="0 the first time, then the previous page's `cursor`"),
            "limit": Field(Integer(1, MAX_CATALOG_PAGE), default=500, doc="items per page"),
            "k": Field(Integer(1, MAX_PREFIX_K), default=48, doc="prefix length of the vectors"),
            "token": TOKEN,
        }
    ),
    (
        Message(
            {
                "items": Field(ListOf(CATALOG_ITEM, MAX_CATALOG_PAGE), required=True, doc="at most `limit`, in the order they last changed"),
                "cursor": Field(COUNT, required=True, doc="ask again from here"),
                "last_page": Field(Boolean(), default=False, doc="true: the copy is current"),
                "total": Field(COUNT, doc="on the last page: the items the share serves now (else nil)"),
                "k": Field(Integer(1, MAX_PREFIX_K)),
            }
        ),
    ),
    capability="browse",
    costly=True,
    doc="Keep a copy of a share's catalog, page by page.",
)

PREVIEW = Spec(
    "preview",
    "1.0.0",
    Message({"hash": HASH_FIELD, "token": TOKEN}),
    (
        Message(
            {
                "mime": Field(Text(100), required=True, doc="`image/jpeg`, `audio/wav` or `text/plain`"),
                "data": Field(Binary(REPLY_FRAME_BYTES - 1024), doc="a thumbnail or a snippet"),
                "text": Field(Text(4000), doc="a document's opening"),
            }
        ),
    ),
    capability="browse",
    costly=True,
    doc="A glimpse of an item before fetching it.",
)

ADAPTER = Spec(
    "adapter",
    "1.0.0",
    Message({"model_id": Field(Text(200), required=True, doc="a model whose vectors the share holds"), "token": TOKEN}),
    (Message({"model_id": Field(Text(200)), "adapter": Field(Binary(MAX_ADAPTER_BYTES), required=True, doc="the adapter's .npz file")}),),
    capability="search",
    max_reply_bytes=MAX_ADAPTER_BYTES + 1024,
    doc="The ordering adapter that produces a model id: join a share's vector space.",
)

REDEEM = Spec(
    "redeem",
    "1.0.0",
    Message({"token": Field(Binary(MAX_TOKEN_BYTES), required=True, doc="an open invite's token")}),
    (Message({"token": Field(Binary(MAX_TOKEN_BYTES), required=True, doc="the same claims, bound to the asking peer")}),),
    max_request_bytes=4 * 1024,
    doc="Bind an open invite's grant to the asking peer.",
)

SUMMARY = Spec(
    "summary",
    "1.0.0",
    Message({"token": TOKEN}),
    (Message({"summary": Field(Binary(MAX_SUMMARY_BYTES), required=True, doc="the signed topic summary (see Topic summaries)")}),),
    capability="search",
    max_request_bytes=4 * 1024,
    max_reply_bytes=MAX_SUMMARY_BYTES + 1024,
    doc="The share's signed topic summary: what global search routes by. Only a share that lets strangers search has one.",
)

PAIR_FIELDS = {
    "proof": Field(Binary(32, size=32), required=True, doc="HMAC-SHA256 proof of the code"),
    "name": Field(Text(1000), required=True, doc="the device's name (shown cut to 100 characters)"),
    "addresses": Field(ListOf(Text(300), 8), required=True, doc="multiaddrs of its devices share, ending in /p2p/<id>"),
}
PAIR = Spec(
    "pair",
    "1.0.0",
    Message(PAIR_FIELDS),
    (Message(PAIR_FIELDS),),
    max_request_bytes=8 * 1024,
    served_by_shares=False,
    doc="Pair two nodes of one user by a short code (served by the node itself, for a few minutes).",
)

PROTOCOLS: tuple[Spec, ...] = (MANIFEST, QUERY, FETCH, CATALOG, PREVIEW, ADAPTER, SUMMARY, REDEEM, PAIR)
SHARE_PROTOCOLS = tuple(spec for spec in PROTOCOLS if spec.served_by_shares)
BY_ID = {spec.id: spec for spec in PROTOCOLS}


def capability_of(protocol_id: str) -> str | None | object:
    """The capability a share's protocol needs (None: none), or MISSING for an unknown protocol."""
    spec = BY_ID.get(protocol_id)
    return MISSING if spec is None or not spec.served_by_shares else spec.capability


# --- the page ---


def markdown() -> str:
    """The field tables of ``docs/protocol.md``, written from the schema."""
    lines: list[str] = []
    for spec in PROTOCOLS:
        lines += [f"#### `{spec.id}`", ""]
        cost = " Costly: takes a work slot." if spec.costly else ""
        need = f"needs `{spec.capability}`" if spec.capability else ("open to every level" if spec.served_by_shares else "served by a node offering pairing")
        lines += [f"{spec.doc} Request frame ≤ {_bytes(spec.max_request_bytes)}; answer frame ≤ {_bytes(spec.max_reply_bytes)}; {need}.{cost}", ""]
        lines += _table("request", spec.request)
        names = ("header", "data (repeated)", "end") if spec.streamed else ("answer",)
        for name, message in zip(names, spec.replies):
            lines += _table(name, message)
    for name, message in (("filters", FILTERS), ("result", RESULT), ("match", MATCH), ("catalog item", CATALOG_ITEM), ("model", MODEL)):
        lines += [f"#### {name}", ""] + _table(name, message)
    return "\n".join(lines).rstrip() + "\n"


def _table(title: str, message: Message) -> list[str]:
    rows = [f"| {title} | type and limit | default | notes |", "|---|---|---|---|"]
    for name, spec in message.fields.items():
        default = "required" if spec.required else ("—" if spec.default is MISSING else f"`{_literal(spec.default)}`")
        kind = spec.type.describe() + (" or nil" if spec.nullable else "")
        rows.append(f"| `{name}` | {kind} | {default} | {spec.doc} |")
    if message.doc:
        rows.append(f"\n{message.doc}")
    return rows + [""]


def _literal(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return {None: "nil", True: "true", False: "false"}[value]
    return repr(value).replace("'", '"')

if __name__ == "__main__":
    print(markdown(), end="")
