"""Node configuration: a typed schema, strict loading, and the documented default file.

The schema below is the single source of truth: loading validates against it, the defaults
come from it, and ``node.example.toml`` (and the file ``peerlight init`` writes) is rendered
from it, so the documentation of an option cannot drift from what the node accepts.
Loading is strict because a daemon that starts half-configured (a typo silently ignored,
a log path it cannot write) fails later and far from the cause.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
import types
from typing import Any, Literal, Optional, Union, get_args, get_origin, get_type_hints

LogLevel = Literal["debug", "info", "warning", "error"]


class ConfigError(Exception):
    """A configuration file that cannot be used, with the file, the key and the reason."""

    def __init__(self, file: Path | str, key: str | None, reason: str) -> None:
        self.file = str(file)
        self.key = key
        self.reason = reason
        where = f"{self.file}: {key}" if key else self.file
        super().__init__(f"{where}: {reason}")


def _option(default: Any, doc: str, *, min: float | None = None, max: float | None = None) -> Any:
    return field(default=default, metadata={"doc": doc, "min": min, "max": max})


@dataclass(frozen=True)
class NodeOptions:
    """Who this node is to the user and, later, to its peers."""

    name: str = _option("", "Human-readable name shown to peers; empty means the host name.")


@dataclass(frozen=True)
class DaemonOptions:
    """How the long-lived daemon process behaves."""

    log_level: LogLevel = _option("info", "Least severe level logged: debug, info, warning or error.")
    log_file: Path = _option(
        Path("logs/peerlight.log"),
        "Log file (JSON lines); relative paths are inside the data directory.",
    )
    log_max_bytes: int = _option(
        10 * 1024 * 1024, "Size at which the log file is rotated.", min=4096
    )
    log_backups: int = _option(5, "Rotated log files kept.", min=0, max=100)
    shutdown_grace_seconds: float = _option(
        10.0,
        "On SIGINT/SIGTERM, how long running requests may take to finish before they are cancelled.",
        min=0,
        max=600,
    )


@dataclass(frozen=True)
class ControlOptions:
    """The local control socket the CLI talks to."""

    max_frame_bytes: int = _option(
        4 * 1024 * 1024,
        "Largest request accepted on the control socket; larger frames get an error and the connection is closed.",
        min=1024,
        max=256 * 1024 * 1024,
    )
    frame_timeout_seconds: float = _option(
        30.0,
        "A client that starts a frame must finish it within this time, or it is disconnected.",
        min=0.1,
        max=3600,
    )


@dataclass(frozen=True)
class CatalogOptions:
    """The SQLite catalog of libraries, items and everything learnt about them."""

    readers: int = _option(
        4, "Read connections used concurrently; writes always go through one writer.", min=1, max=64
    )


@dataclass(frozen=True)
class IndexOptions:
    """How libraries are kept in step with the disk."""

    watch: bool = _option(True, "Rescan a library as soon as the filesystem reports a change in it.")
    rescan_interval_seconds: float = _option(
        3600.0, "Full rescan period, which also catches changes notifications missed.", min=5, max=7 * 86400
    )
    skip_hidden: bool = _option(True, "Skip files and folders whose names start with a dot.")
    store_gps: bool = _option(False, "Store GPS coordinates from photos' EXIF data.")
    workers: int = _option(2, "Files inspected (hashed, decoded) in parallel.", min=1, max=64)
    isolate_decoders: bool = _option(
        True,
        "Run native decoders (libav, libheif, Pillow) in worker processes: a file that crashes one is listed as corrupt "
        "and the daemon goes on. false decodes inside the daemon (a little faster, but such a file ends it).",
    )
    decoder_memory_mb: int = _option(2048, "Address space each decoder worker may use; a file that needs more is listed as too_large.", min=256, max=65536)
    forget_missing_after_seconds: float = _option(
        7 * 86400.0,
        "How long an item whose files all vanished keeps its embeddings and metadata, in case the file comes back.",
        min=0,
    )


@dataclass(frozen=True)
class SearchOptions:
    """How vectors are searched: a short prefix of every ordered vector first, then a full rerank."""

    prefix_length: int = _option(
        0, "Values of each ordered vector compared in the first stage; 0 means an eighth of the dimension.", min=0, max=4096
    )
    shortlist: int = _option(
        0,
        "Candidates re-ranked on their full vectors after the prefix stage; 0: as many as the library needs to keep "
        "0.99 of the exact top 10 (measured on its own vectors, again when it doubles or halves).",
        min=0,
        max=1_000_000,
    )
    save_interval_seconds: float = _option(
        30.0, "How often changed vector indexes are written to disk (they are also written at shutdown).", min=1
    )


@dataclass(frozen=True)
class ModelsOptions:
    """Where and how the embedding models run."""

    device: Literal["auto", "cpu", "cuda"] = _option("auto", "auto (a GPU if torch sees one), cpu or cuda.")
    allow_download: bool = _option(
        False, "Let the node download missing weights from the Hugging Face Hub / open_clip on first use."
    )
    cache_dir: Optional[Path] = _option(None, "Where downloaded weights are cached; empty means each library's default.")
    batch_size: int = _option(16, "Items encoded per batch.", min=1, max=1024)
    idle_unload_seconds: float = _option(600.0, "Unload a model not used for this long, to free memory.", min=1)
    retry_missing_seconds: float = _option(
        300.0, "How often to look again for weights that were missing, to finish pending embeddings.", min=1
    )
    train_adapters: bool = _option(
        True,
        "Train an ordering adapter for a model that has none shipped (adapter = \"default\"), once it has stored enough vectors.",
    )
    adapter_training_vectors: int = _option(
        2000, "Stored vectors a model needs before the node trains its ordering adapter from them.", min=64, max=50_000
    )
    # As TrainingOptions.steps: 1,000 steps gave the same recall as 2,000 on text left out of training.
    adapter_training_steps: int = _option(1000, "Training steps of an adapter the node trains itself.", min=1, max=1_000_000)


_ADAPTER_DOC = (
    'Importance-ordering adapter: "default" (the one shipped for this model, else the one the node trained for it),'
    ' "none" (store base vectors), or an adapter id or .npz file from `peerlight models train-adapter`.'
)


@dataclass(frozen=True)
class ImageModelOptions:
    """open_clip: images, video frames and the text queries that search them share this model."""

    name: str = _option("ViT-B-32", "open_clip architecture, e.g. ViT-B-32 or MobileCLIP2-S0.")
    pretrained: str = _option(
        "laion2b_s34b_b79k", "open_clip pretrained tag; \"random\" means untrained weights with a fixed seed (tests only)."
    )
    checkpoint: Optional[Path] = _option(None, "Local checkpoint file; overrides the pretrained tag when set.")
    adapter: str = _option("default", _ADAPTER_DOC)


@dataclass(frozen=True)
class TextModelOptions:
    """sentence-transformers: text documents, split into overlapping chunks."""

    name: str = _option("sentence-transformers/all-MiniLM-L6-v2", "Model name on the Hugging Face Hub.")
    checkpoint: Optional[Path] = _option(None, "Local model folder; overrides the name when set.")
    adapter: str = _option("default", _ADAPTER_DOC)
    chunk_words: int = _option(120, "Words per chunk of a document.", min=16, max=2000)
    chunk_overlap_words: int = _option(30, "Words each chunk shares with the previous one.", min=0, max=1000)


@dataclass(frozen=True)
class AudioModelOptions:
    """CLAP for music and sound; without its weights, audio is embedded from its tags."""

    enabled: bool = _option(True, "Use CLAP when its weights are available.")
    name: str = _option("laion/clap-htsat-unfused", "CLAP model name on the Hugging Face Hub.")
    checkpoint: Optional[Path] = _option(None, "Local CLAP folder; overrides the name when set.")
    adapter: str = _option("default", _ADAPTER_DOC)


@dataclass(frozen=True)
class VideoOptions:
    """How videos are sampled for the image model."""

    frame_interval_seconds: float = _option(5.0, "One frame every this many seconds.", min=0.1)
    max_frames: int = _option(32, "At most this many frames per video (spread over its length).", min=1, max=1000)


@dataclass(frozen=True)
class NetworkOptions:
    """Data Servers (this node's shares) and the client that asks other nodes' shares."""

    enabled: bool = _option(True, "Run the Data Servers and the peer client; false keeps the node off every network, loopback included.")
    query_timeout_seconds: float = _option(
        5.0, "How long a search waits for peers; those that do not answer in time are left out (and named).", min=0.1, max=120
    )
    requests_per_minute: int = _option(1200, "Requests one peer may make per minute to a share.", min=1)
    streams_per_peer: int = _option(16, "Streams one peer may have open at once to a share.", min=1, max=1024)
    max_connections: int = _option(1000, "Connections a share accepts at once.", min=1, max=100_000)
    max_active_peers: int = _option(
        256, "Peers served at once by all shares together; a new peer beyond it is refused (rate_limited) before any work.", min=1, max=100_000
    )
    concurrent_work: int = _option(
        4,
        "Costly requests (text queries, scans, previews) all shares answer at once; each peer gets at most its fair share.",
        min=1,
        max=256,
    )
    bootstrap: tuple[str, ...] = _option(
        (),
        "Multiaddrs (/ip4/…/tcp/…/p2p/…) of DHT nodes to join for global shares and `discover --global`; "
        "public libp2p bootstrap nodes join the public DHT. Empty: no DHT.",
    )
    reprovide_seconds: float = _option(600.0, "How often a global share announces itself again on the DHT.", min=10, max=86400)
    search_shares: int = _option(
        10,
        "Shares a search asks beyond those you added or joined: `search --global` asks the best this many found on the "
        "DHT by the query's topics, `search --peers` the best this many of those discovery found.",
        min=1,
        max=1000,
    )
    announce: Literal["public", "all"] = _option(
        "public",
        "Which of its addresses a global share announces on the DHT and to the peers it meets: public (globally "
        "routable ones only; never loopback, private or container addresses) or all (a DHT on a private network).",
    )
    relay_service: bool = _option(
        False,
        "Offer this node's global shares as circuit relays (v2) for peers behind NATs, within the relay_* limits below, "
        "once they are reachable from the internet.",
    )
    relay_reservations: int = _option(128, "Relay: hosts holding a reservation at once.", min=1, max=100_000)
    relay_circuits: int = _option(64, "Relay: circuits open at once, over all hosts.", min=1, max=100_000)
    relay_circuits_per_peer: int = _option(4, "Relay: circuits open at once to one reserved host.", min=1, max=1024)
    relay_circuit_bytes: int = _option(
        128 * 2**20, "Relay: bytes one circuit carries (both ways together) before it is cut; 0 for no limit.", min=0
    )
    relay_circuit_seconds: int = _option(300, "Relay: how long one circuit lives before it is cut; 0 for no limit.", min=0, max=86400)
    relay_reservation_seconds: int = _option(3600, "Relay: how long a reservation lasts before its host must renew it.", min=60, max=86400)
    relays: tuple[str, ...] = _option(
        (),
        "Multiaddrs (/ip4/…/tcp/…/p2p/…) of circuit relays a global share behind a NAT reserves a slot on; "
        "relays found on the DHT are used as well.",
    )
    relays_kept: int = _option(2, "Relays a global share behind a NAT keeps reservations with.", min=1, max=3)
    hole_punching: bool = _option(
        True,
        "Upgrade connections through a relay to direct ones (DCUtR). With bootstrap or relays set, the node's client "
        "then also listens on every interface (announcing none of it) for the direct connection a punch makes.",
    )
    max_remote_items: int = _option(
        1_000_000,
        "Items kept of one peer's share catalog. A sync also stops when a share sends far more than its manifest says it holds.",
        min=1,
        max=100_000_000,
    )
    metrics_port: int = _option(
        0, "Serve Prometheus metrics at http://127.0.0.1:PORT/metrics (loopback only); 0 turns the endpoint off.", min=0, max=65535
    )


@dataclass(frozen=True)
class RecommenderOptions:
    """The local preference model and how `recommend` ranks. Ratings and the model never leave this machine."""

    model: Literal["bayesian", "mlp"] = _option(
        "bayesian",
        "Each vector space's head: bayesian (linear + local regression, its regularisation and uncertainty from the "
        "evidence) or mlp (a small ensemble of neural networks; it needs more ratings).",
    )
    retrain_delay_seconds: float = _option(
        0.5, "How long after new feedback the model retrains; feedback arriving meanwhile is trained on together.", min=0, max=3600
    )
    exploration: float = _option(0.5, "Bonus per predicted standard deviation, in rating points: room for items the model is unsure of.", min=0, max=10)
    novelty: float = _option(1.5, "Rating points taken from an item seen just now (recovering over days).", min=0, max=10)
    diversity: float = _option(0.3, "How much similar items push each other down the list: 0 none, 1 only dissimilarity counts.", min=0, max=1)


@dataclass(frozen=True)
class UiOptions:
    """The web UI the daemon serves on loopback (`peerlight ui` opens it, logged in), and, if asked, to other machines."""

    enabled: bool = _option(True, "Serve the web UI at http://127.0.0.1:PORT/ (loopback only; only this machine's user can log in).")
    port: int = _option(7780, "The web UI's port on 127.0.0.1; 0 picks a free one (`peerlight ui` knows which).", min=0, max=65535)
    session_hours: float = _option(12.0, "How long a browser stays logged in after `peerlight ui` logged it in.", min=0.1, max=24 * 30)
    private_host: bool = _option(
        True,
        "Serve the UI at http://p-<secret>.localhost:PORT (Chrome, Firefox and Edge resolve any .localhost name to this "
        "machine), so no other program listening on 127.0.0.1 is ever sent its cookie; false: at 127.0.0.1 (for a browser "
        "that does not resolve .localhost names).",
    )
    # A string, not a Path: the loader expands a Path's ~ at once, and this default must stay the same written and read.
    downloads: str = _option("~/Downloads/Peerlight", "Where the web UI saves what it fetches from peers (made if missing; ~ is your home).")
    max_connections: int = _option(64, "Connections the UI holds open at once at each address it serves; more are closed at once.", min=4, max=10_000)
    loopback_other_users: bool = _option(
        False,
        "Answer loopback connections of other users' programs too (they still need a login link): for a browser that "
        "reaches the node through a forwarder running as another user (e.g. Windows through WSL2). Off: closed unanswered (Linux).",
    )
    remote_listen: str = _option(
        "",
        "Also serve the UI to other machines at this address of this machine (or 0.0.0.0 or :: for all); empty: loopback only. "
        "Logging in there takes the password `peerlight ui password` sets.",
    )
    remote_port: int = _option(7781, "The port of the UI for other machines (with remote_listen).", min=1, max=65535)
    remote_hosts: tuple[str, ...] = _option(
        (), "Host names other machines reach the UI by (e.g. nas.local); its IP addresses always work, any other name is refused."
    )
    tls_certificate: str = _option(
        "", "PEM certificate (chain) for the UI for other machines, served then over HTTPS; without one a remote login crosses the network in clear."
    )
    tls_key: str = _option("", "The PEM private key of tls_certificate.")


@dataclass(frozen=True)
class Config:
    """A validated node configuration. Every section has working defaults."""

    node: NodeOptions = field(default_factory=NodeOptions)
    daemon: DaemonOptions = field(default_factory=DaemonOptions)
    control: ControlOptions = field(default_factory=ControlOptions)
    catalog: CatalogOptions = field(default_factory=CatalogOptions)
    index: IndexOptions = field(default_factory=IndexOptions)
    search: SearchOptions = field(default_factory=SearchOptions)
    models: ModelsOptions = field(default_factory=ModelsOptions)
    image_model: ImageModelOptions = field(default_factory=ImageModelOptions)
    text_model: TextModelOptions = field(default_factory=TextModelOptions)
    audio_model: AudioModelOptions = field(default_factory=AudioModelOptions)
    video: VideoOptions = field(default_factory=VideoOptions)
    network: NetworkOptions = field(default_factory=NetworkOptions)
    recommender: RecommenderOptions = field(default_factory=RecommenderOptions)
    ui: UiOptions = field(default_factory=UiOptions)

    def resolve_path(self, data_dir: Path, path: Path) -> Path:
        """A configured path, with relative paths taken inside the data directory."""
        return path if path.is_absolute() else data_dir / path


def load_config(file: Path, data_dir: Path | None = None) -> Config:
    """Read and validate a config file; raise :class:`ConfigError` naming the bad key."""
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(file, None, "no such file (run `peerlight init` to create one)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(file, None, f"cannot be read: {exc}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, None, f"not valid TOML: {exc}") from None
    config = _build(Config, raw, file, prefix="")
    _check_paths(config, file, data_dir if data_dir is not None else file.parent)
    return config


def _build(cls: type, raw: Any, file: Path, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(file, prefix.rstrip(".") or None, f"expected a table, got {_toml_type(raw)}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(file, prefix + key, f"unknown option (known here: {known})")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        key = prefix + name
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, value, file, prefix=key + ".")
        else:
            values[name] = _convert(hint, value, fields[name].metadata, file, key)
    return cls(**values)


def _convert(hint: Any, value: Any, meta: Any, file: Path, key: str) -> Any:
    if _is_optional_path(hint):
        # TOML has no null: an empty string means "not set".
        if isinstance(value, str) and value == "":
            return None
        return _convert(Path, value, meta, file, key)
    if get_origin(hint) is Literal:
        choices = get_args(hint)
        if value not in choices:
            allowed = ", ".join(repr(c) for c in choices)
            raise ConfigError(file, key, f"must be one of {allowed}, got {value!r}")
        return value
    if get_origin(hint) is tuple:  # tuple[str, ...]: a TOML array of strings
        if not isinstance(value, list) or not all(isinstance(item, str) and item.strip() for item in value):
            raise ConfigError(file, key, f"expected an array of strings, got {_toml_type(value)}")
        return tuple(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(file, key, f"expected true or false, got {_toml_type(value)}")
        return value
    if hint is int or hint is float:
        ok = isinstance(value, int) or (hint is float and isinstance(value, float))
        if not ok or isinstance(value, bool):
            raise ConfigError(file, key, f"expected {_type_word(hint)}, got {_toml_type(value)}")
        if not math.isfinite(value):  # TOML has nan and inf; every comparison with nan is false
            raise ConfigError(file, key, f"must be a finite number, got {value}")
        if meta.get("min") is not None and value < meta["min"]:
            raise ConfigError(file, key, f"must be at least {meta['min']}, got {value}")
        if meta.get("max") is not None and value > meta["max"]:
            raise ConfigError(file, key, f"must be at most {meta['max']}, got {value}")
        return hint(value)
    if hint is str or hint is Path:
        if not isinstance(value, str):
            raise ConfigError(file, key, f"expected a string, got {_toml_type(value)}")
        if hint is Path:
            if not value.strip() or "\x00" in value:
                raise ConfigError(file, key, "expected a path, got an empty or invalid string")
            return Path(value).expanduser()
        return value
    raise TypeError(f"unsupported option type {hint!r} for {key}")  # a schema bug, not user error


def _is_optional_path(hint: Any) -> bool:
    return get_origin(hint) in (Union, types.UnionType) and set(get_args(hint)) == {Path, type(None)}


def _check_ui(config: Config, file: Path) -> None:
    ui = config.ui
    if ui.remote_listen:
        try:
            ipaddress.ip_address(ui.remote_listen)
        except ValueError:
            raise ConfigError(file, "ui.remote_listen", f"{ui.remote_listen!r} is not an IP address (e.g. 192.168.1.20, or 0.0.0.0 for all)") from None
        if ui.remote_port == ui.port:
            raise ConfigError(file, "ui.remote_port", "must differ from ui.port (loopback holds that one)")
    if bool(ui.tls_certificate) != bool(ui.tls_key):
        raise ConfigError(file, "ui.tls_key" if ui.tls_certificate else "ui.tls_certificate", "set both tls_certificate and tls_key, or neither")
    for name in ui.remote_hosts:
        if not re.fullmatch(r"[A-Za-z0-9.-]{1,253}", name):
            raise ConfigError(file, "ui.remote_hosts", f"{name!r} is not a host name")


def _check_paths(config: Config, file: Path, data_dir: Path) -> None:
    """Reject paths and combinations the daemon could not use, before it starts doing anything."""
    # A model checkpoint may be missing at start: its items wait until the weights appear.
    for key, addresses in (("network.bootstrap", config.network.bootstrap), ("network.relays", config.network.relays)):
        for address in addresses:
            # A full multiaddr names the peer: /ip4/…/tcp/…/p2p/<peer id> (or /dns…, /ip6…).
            if not re.fullmatch(r"/(ip4|ip6|dns|dns4|dns6)/[^/]+/tcp/\d+/p2p/[1-9A-HJ-NP-Za-km-z]+", address):
                raise ConfigError(file, key, f"{address!r} is not a multiaddr like /ip4/203.0.113.7/tcp/4001/p2p/12D3KooW…")
    _check_ui(config, file)
    if config.text_model.chunk_overlap_words >= config.text_model.chunk_words:
        raise ConfigError(file, "text_model.chunk_overlap_words", "must be smaller than text_model.chunk_words")
    log_file = config.resolve_path(data_dir, config.daemon.log_file)
    if log_file.is_dir():
        raise ConfigError(file, "daemon.log_file", f"{log_file} is a directory, not a file")
    existing = log_file.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(file, "daemon.log_file", f"cannot create {log_file}: {existing} is not a writable directory")
    if log_file.exists() and not os.access(log_file, os.W_OK):
        raise ConfigError(file, "daemon.log_file", f"{log_file} is not writable")


def _type_word(hint: Any) -> str:
    return {int: "an integer", float: "a number"}[hint]


def _toml_type(value: Any) -> str:
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def render_default_config() -> str:
    """The documented default configuration, as written to ``node.example.toml`` and by init."""
    lines = [
        "# Peerlight node configuration.",
        "#",
        "# Every option is listed with its default value; delete any you do not want to pin.",
        "# Relative paths are taken inside the node's data directory.",
    ]
    defaults = Config()
    for section in dataclasses.fields(Config):
        options = getattr(defaults, section.name)
        lines += ["", f"[{section.name}]", f"# {type(options).__doc__}"]
        for option in dataclasses.fields(options):
            lines.append(f"# {option.metadata['doc']}")
            lines.append(f"{option.name} = {_toml_value(getattr(options, option.name))}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if value is None:
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    # JSON string escapes are valid TOML basic-string escapes.
    return json.dumps(str(value))
