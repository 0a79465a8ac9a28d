"""Labelled retrieval sets built from text that exists offline on this machine.

Each set is a collection of documents and queries, each query naming the one document it
should find; every other document is a distractor from the same source. Two sources:

- :func:`docstring_set` (for tuning): docstrings of the installed Python standard library,
  read with :mod:`ast` (no module is imported). Query = a docstring's one-line summary,
  document = the rest of that docstring (at least 40 words). Distractors are other
  docstrings' bodies of at least 20 words (the stdlib has too few 40-word ones for 2,000).
- :func:`manpage_set` (held out): English man pages under ``/usr/share/man/man1``..``man8``.
  Query = the NAME line's description (after ``\\-``), document = the DESCRIPTION section
  stripped of roff to readable prose (at least 40 words). Pages whose description is a
  near-copy of the query still serve as distractors.

Both are deterministic given a seed. Nothing happens at import.
"""

from __future__ import annotations

import ast
import difflib
import gzip
import random
import re
import sysconfig
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

MIN_BODY_WORDS = 40  # a query's target document has at least this many words
# The stdlib has only ~1,000 docstrings with a one-line summary and a 40-word body, and
# ~1,350 with 40 words after the summary at all: distractors may be shorter, down to this.
MIN_DISTRACTOR_WORDS = 20
MAN_ROOT = Path("/usr/share/man")
MAN_SECTIONS = tuple(f"man{n}" for n in range(1, 9))
# gcloud ships ~16,600 generated pages (three quarters of man1) that are near-identical
# templates of one another; they would swamp any sample, so they are left out.
MAN_SKIP_PREFIXES = ("gcloud_",)
NEAR_COPY_RATIO = 0.8

_SKIP_DIRS = {"test", "tests", "idle_test", "idlelib", "site-packages", "__pycache__", "turtledemo"}
_SAFE = re.compile(r"[^A-Za-z0-9._+-]+")


@dataclass(frozen=True)
class Document:
    name: str  # a file name to write it under, e.g. "tar.1.txt" (safe characters, unique in the set)
    text: str  # the document's text, written as the file's content (UTF-8)


@dataclass(frozen=True)
class RetrievalSet:
    name: str
    source: str  # one line saying where the text came from
    documents: list[Document]
    queries: list[tuple[str, int]]  # (query text, index of the one document it should find)


# --- shared ---


def _normalise(text: str) -> str:
    return " ".join(text.lower().split())


def _words(text: str) -> int:
    return len(text.split())


def _safe_name(stem: str) -> str:
    return _SAFE.sub("_", stem).strip("._") or "document"


def _sample(
    name: str, source: str, entries: Iterable[tuple[str, str | None, str]], documents: int, queries: int, seed: int
) -> RetrievalSet:
    """(file stem, query or None, document) entries in a stable order -> a sampled set.

    An entry whose document text repeats an earlier one's is dropped (an identical twin would
    be an equally right answer). An entry keeps its query only if the query is new and does
    not appear verbatim in its document; entries without a query are distractors only.
    ``queries`` targets are drawn from the entries with a query, the other ``documents -
    queries`` documents from all the rest; the documents are then shuffled.
    """
    entries_kept: list[tuple[str, str | None, str]] = []
    seen_docs: set[str] = set()
    seen_queries: set[str] = set()
    for stem, query, text in entries:
        d = _normalise(text)
        if d in seen_docs:
            continue
        seen_docs.add(d)
        q = _normalise(query) if query else ""
        if not q or q in d or q in seen_queries:
            query = None
        else:
            seen_queries.add(q)
        entries_kept.append((stem, query, text))
    targets = [i for i, e in enumerate(entries_kept) if e[1] is not None]
    if queries > len(targets):
        raise ValueError(f"{name}: only {len(targets)} usable queries, {queries} asked for")
    if documents > len(entries_kept):
        raise ValueError(f"{name}: only {len(entries_kept)} usable documents, {documents} asked for")
    if queries > documents:
        raise ValueError(f"{name}: more queries ({queries}) than documents ({documents})")
    rng = random.Random(seed)
    rng.shuffle(targets)
    chosen_targets = targets[:queries]
    taken = set(chosen_targets)
    rest = [i for i in range(len(entries_kept)) if i not in taken]
    rng.shuffle(rest)
    order = chosen_targets + rest[: documents - queries]
    rng.shuffle(order)
    docs, used, position = [], set(), {}
    for place, index in enumerate(order):
        stem, _, text = entries_kept[index]
        file = f"{_safe_name(stem)}.txt"
        n = 2
        while file.lower() in used:
            file = f"{_safe_name(stem)}-{n}.txt"
            n += 1
        used.add(file.lower())
        docs.append(Document(file, text))
        position[index] = place
    pairs = [(entries_kept[i][1] or "", position[i]) for i in chosen_targets]
    return RetrievalSet(name, source, docs, pairs)


# --- Python docstrings (tuning set) ---


def _stdlib_files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if any(p in _SKIP_DIRS or p.startswith("config-") for p in parts[:-1]):
            continue
        if parts[-1].startswith("test_"):
            continue
        yield path


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _documented(tree: ast.Module, module: str) -> Iterator[tuple[str, str]]:
    """(qualified name, cleaned docstring) for the module and every class and function in it."""

    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, str]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                qualified = f"{prefix}.{child.name}"
                doc = ast.get_docstring(child)
                if doc:
                    yield qualified, doc
                yield from walk(child, qualified)
            elif isinstance(child, (ast.If, ast.Try, ast.With)):  # definitions under `if sys.platform...`
                yield from walk(child, prefix)

    doc = ast.get_docstring(tree)
    if doc:
        yield module, doc
    yield from walk(tree, module)


def _docstring_entry(doc: str) -> tuple[str | None, str] | None:
    """(one-line summary or None, document text) of a cleaned docstring, or None if too short.

    The document is the docstring without its first paragraph (the summary) and without
    doctest paragraphs; a one-paragraph docstring is its own document. The summary is a query
    only when it is a single line followed by a body of at least ``MIN_BODY_WORDS`` words.
    """
    paragraphs = [p.strip("\n") for p in re.split(r"\n\s*\n", doc.strip()) if p.strip()]
    paragraphs = [p for p in paragraphs if ">>>" not in p]
    if not paragraphs:
        return None
    first, rest = paragraphs[0], paragraphs[1:]
    text = "\n\n".join(rest) if rest else first
    if _words(text) < MIN_DISTRACTOR_WORDS:
        return None
    summary = " ".join(first.split())
    one_line = rest and "\n" not in first and len(summary.split()) >= 3 and not summary.endswith(":")
    if one_line and doc.strip().startswith(first) and _words(text) >= MIN_BODY_WORDS:
        return summary, text
    return None, text


def docstring_pairs(stdlib: Path | None = None) -> Iterator[tuple[str, str | None, str]]:
    """(qualified name, summary or None, document) for every usable stdlib docstring, in a stable order."""
    root = Path(stdlib or sysconfig.get_paths()["stdlib"])
    for path in _stdlib_files(root):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except (SyntaxError, ValueError):
            continue
        for qualified, doc in _documented(tree, _module_name(root, path)):
            entry = _docstring_entry(doc)
            if entry:
                yield qualified, entry[0], entry[1]


def docstring_set(documents: int = 2000, queries: int = 200, seed: int = 0) -> RetrievalSet:
    """TUNING set: stdlib docstrings; query = summary line, document = the docstring's body."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return _sample(
        "docstrings",
        f"docstrings of the Python standard library at {root} (parsed with ast; tests and idlelib skipped)",
        docstring_pairs(root),
        documents,
        queries,
        seed,
    )


# --- man pages (held-out set) ---

# roff named characters, each written as its two-letter name followed by the character
_CHARS = {
    p[:2]: p[2:]
    for p in r"""
    em— en– hy- aq' dq" lq“ rq” oq‘ cq’ bu• co© rg® tm™ mu× di÷ +-± <=≤ >=≥ !=≠ ==== ->→ <-← de° ga`
    ti~ ha^ rs\ sl/ ba| br| bv| lB[ rB] lC{ rC} la⟨ ra⟩ Fo« Fc» fo‹ fc› ul_ ru_ pl+ mi- eq= ssß at@ sh#
    Do$ ct¢ Po£ Eu€ es∅ if∞ ua↑ da↓ sc§ ps¶ dg† pc· aa´ 'eé 'aá :uü :oö :aä `eè ,cç ~nñ
""".split()
}
_STRINGS = {"lq": "“", "rq": "”", "R": "®", "Tm": "™", "S": "", "Lq": "“", "Rq": "”", "Aq": "'", "dq": '"'}
_ESCAPE = re.compile(
    r"""\\(?:
        [hvwoLlbDRXSNZ]'[^']*'             # escapes with a quoted argument: motions, widths, ...
      | f(?:\[[^\]]*\]|\(..|.)            # font
      | s(?:[-+]?\d+|[-+]?\(\d\d|\[[^\]]*\])   # size
      | n[-+]?(?:\(..|\[[^\]]*\]|.)      # number register
      | \*(?:\(..|\[[^\]]*\]|.)           # string
      | \((..)                            # named character, two letters
      | \[([^\]]*)\]                      # named character, long form
      | [e\\]                             # backslash
      | -                                 # minus
      | [ ~0]                             # spaces
      | [&|^/,%:c!{}dryu]                 # zero-width characters and motions
      | (.)                               # anything else: itself
      | $                                 # line continuation
    )""",
    re.VERBOSE,
)


def _unescape(text: str) -> str:
    text = re.sub(r'\\".*$', "", text)  # comment

    def one(match: re.Match[str]) -> str:
        token = match.group(0)
        kind = token[1] if len(token) > 1 else ""
        if kind == "*":
            name = token[2:]
            name = name[1:] if name.startswith("(") else name.strip("[]")
            return _STRINGS.get(name, "")
        if match.group(1) is not None:
            return _CHARS.get(match.group(1), "")
        if match.group(2) is not None:
            name = match.group(2)
            if name.startswith("u") and re.fullmatch(r"u[0-9A-Fa-f]{4,6}", name):
                return chr(int(name[1:], 16))
            return _CHARS.get(name, "")
        if kind in ("e", "\\"):
            return "\\"
        if kind == "-":
            return "-"
        if kind in (" ", "~", "0"):
            return " "
        if match.group(3) is not None:
            return match.group(3)
        return ""

    return _ESCAPE.sub(one, text)


def _macro_args(rest: str) -> list[str]:
    """Arguments of a request line, honouring double quotes."""
    args, current, quoted, i = [], [], False, 0
    while i < len(rest):
        ch = rest[i]
        if ch == "\\" and i + 1 < len(rest):
            current.append(rest[i : i + 2])
            i += 2
            continue
        if ch == '"':
            if quoted and rest[i + 1 : i + 2] == '"':
                current.append('"')
                i += 2
                continue
            quoted = not quoted
        elif ch in " \t" and not quoted:
            if current:
                args.append("".join(current))
                current = []
        else:
            current.append(ch)
        i += 1
    if current:
        args.append("".join(current))
    return args


_ALTERNATING = {"BR", "RB", "IR", "RI", "BI", "IB"}
_INLINE = frozenset(
    """B I SM SB UR MT SY OP Nm Ar Pa Em Sy Ev Li Cm Dv Er Ic Va Vt Ft Fn Fa Ad An Lk Ms Tn Ql Dq Sq Pq Qq
    Do Dc Dl %T St Ux Bx Ox Nx Fx At Xr Fl Op Oo Oc Ns Ta It D1 No Mt Bq Brq Aq Cd Fd In Lb Rv Ex""".split()
)
_BREAKS = frozenset("""PP P LP sp Pp Lp HP TP TQ IP SS Ss Bl El Bd Ed RS RE nf fi EX EE br in ti YS UE ME""".split())
_MDOC_CALLABLE = re.compile(
    r"^(?:Ar|Fl|Pa|Nm|Xr|Em|Sy|Cm|Ev|Li|Dv|Er|Ic|Va|Ql|Dq|Sq|Pq|Qq|Op|Oo|Oc|Ns|No|Ta|Aq|Bq|Brq|Do|Dc|Pf|Ux|Bx|Ox|Nx|Fx|At)$"
)


_PUNCTUATION = {".", ",", ";", ":", ")", "]", "?", "!"}


def _mdoc_inline(macro: str, args: list[str], name: str = "") -> str:
    """The text of an mdoc line: callable macros among the arguments dropped, punctuation attached."""
    words: list[str] = []
    glue = flag = False
    tokens = [macro] + args
    for i, arg in enumerate(tokens):
        if _MDOC_CALLABLE.match(arg) or (i == 0 and arg in ("It", "D1", "Dl", "Nd", "Cd", "Fd", "In", "Ft", "Fn", "Fa")):
            if arg == "Ns":
                glue = True
            flag = arg == "Fl"
            if arg == "Nm" and (i + 1 == len(tokens) or _MDOC_CALLABLE.match(tokens[i + 1]) or tokens[i + 1] in _PUNCTUATION):
                words.append(name)
            elif arg == "Ux":
                words.append("UNIX")
            elif arg == "Xr" and i + 2 < len(tokens) and tokens[i + 2].isdigit():
                tokens[i + 2] = f"({tokens[i + 2]})"
            continue
        text = ("-" + arg) if flag else arg
        flag = False
        if words and (glue or arg in _PUNCTUATION or arg.startswith("(") and arg[1:-1].isdigit()):
            words[-1] += text
        else:
            words.append(text)
        glue = False
    if macro == "Fl" and not args:
        return "-"
    return " ".join(w for w in words if w)


def _roff_sections(source: str) -> dict[str, list[str]]:
    """Section name (upper case) -> the section's lines of plain text ('' marks a paragraph break)."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    skipping_until: str | None = None
    in_table = table_format = False
    page_name = ""
    for raw in source.splitlines():
        line = raw.rstrip()
        if skipping_until is not None:
            if line.startswith(skipping_until):
                skipping_until = None
            continue
        if in_table:
            if line.startswith((".TE", "'TE")):
                in_table = False
                if current is not None:
                    current.append("")
            elif table_format:
                table_format = not line.rstrip().endswith(".")
            elif current is not None and not line.startswith((".", "'")):
                cells = [_unescape(c.replace("T{", "").replace("T}", "")).strip() for c in line.split("\t")]
                if any(c and c not in ("_", "=") for c in cells):
                    current.append(" ".join(c for c in cells if c not in ("_", "=", "T{", "T}")))
            continue
        if line.startswith((".", "'")):
            body = line[1:].lstrip()
            if body.startswith(('\\"', "#")) or not body:
                continue
            macro, _, rest = body.partition(" ")
            macro = macro.strip()
            args = _macro_args(rest)
            if macro in ("de", "de1", "am", "ig"):
                skipping_until = ".."
                continue
            if macro in ("SH", "Sh"):
                title = _unescape(" ".join(args)).strip().upper()
                current = sections.setdefault(title, [])
                continue
            if current is None:
                continue
            if macro in ("TS",):
                in_table, table_format = True, True
                continue
            if macro in _ALTERNATING:
                current.append(_unescape("".join(args)))
            elif macro in ("IP",):
                current.append("")
                if args and args[0] not in ("\\(bu", "\\[bu]", "*", "-", "\\-", "o"):
                    current.append(_unescape(args[0]))
            elif macro in ("SS", "Ss"):
                current.extend(["", _unescape(" ".join(args)) + ".", ""])
            elif macro in ("It",):
                current.append("")
                text = _mdoc_inline("It", args, page_name)
                if text:
                    current.append(_unescape(text))
            elif macro in _BREAKS:
                current.append("")
            elif macro == "Nd":
                current.append("- " + _unescape(" ".join(args)))
            elif macro in _INLINE:
                mdoc = len(macro) == 2 and macro[0].isupper() and macro[1].islower()
                if mdoc and macro == "Nm" and args and not page_name:
                    page_name = args[0]
                text = _unescape(_mdoc_inline(macro, args, page_name) if mdoc else " ".join(args))
                if text.strip():
                    current.append(text)
            # every other request (fonts, spacing, conditionals, ...) carries no prose
            continue
        if current is not None:
            current.append(_unescape(line))
    return sections


def _prose(lines: list[str]) -> str:
    paragraphs, words = [], []
    for line in lines + [""]:
        if line.strip():
            words.append(line.strip())
        elif words:
            paragraphs.append(" ".join(" ".join(words).split()))
            words = []
    return "\n\n".join(paragraphs)


def _man_description(name_lines: list[str]) -> str | None:
    text = " ".join(" ".join(name_lines).split())
    for separator in (" - ", " — ", " – "):
        if separator in text:
            return text.split(separator, 1)[1].strip() or None
    return None


def _first_sentence(text: str) -> str:
    return re.split(r"(?<=[.!?])\s", text, maxsplit=1)[0]


def _near_copy(query: str, text: str) -> bool:
    q = _normalise(query).rstrip(".")
    first = _normalise(_first_sentence(text)).rstrip(".")
    return difflib.SequenceMatcher(None, q, first).ratio() >= NEAR_COPY_RATIO


def _man_files(root: Path) -> Iterator[tuple[Path, str, str]]:
    """(file, command, section) for each real (not linked, not .so-redirect) page."""
    for section in MAN_SECTIONS:
        folder = root / section
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            if path.is_symlink() or not path.is_file() or not path.name.endswith(".gz"):
                continue
            if path.name.startswith(MAN_SKIP_PREFIXES):
                continue
            stem = path.name[: -len(".gz")]
            command, dot, page_section = stem.rpartition(".")
            if not dot:
                continue
            yield path, command, page_section


def manpage_pairs(root: Path = MAN_ROOT) -> Iterator[tuple[str, str | None, str]]:
    """(command.section, NAME description or None, DESCRIPTION prose) for every usable page, in a stable order."""
    for path, command, section in _man_files(root):
        try:
            source = gzip.decompress(path.read_bytes()).decode("utf-8", errors="replace")
        except (OSError, EOFError):
            continue
        if source.lstrip().startswith(".so "):
            continue
        sections = _roff_sections(source)
        query = _man_description(sections.get("NAME", []))
        text = _prose(sections.get("DESCRIPTION", []))
        if _words(text) < MIN_BODY_WORDS:
            continue
        if not query or _words(query) < 2 or _near_copy(query, text):
            query = None  # still a distractor
        yield f"{command}.{section}", query, text


def manpage_set(documents: int = 2000, queries: int = 200, seed: int = 0) -> RetrievalSet:
    """HELD-OUT set: man pages; query = NAME one-liner, document = DESCRIPTION as prose."""
    return _sample(
        "man-pages",
        f"English man pages in {MAN_ROOT}/man1..man8 (roff stripped; gcloud's generated pages skipped)",
        manpage_pairs(),
        documents,
        queries,
        seed,
    )
