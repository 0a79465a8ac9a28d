"""The ``peerlight`` command line.

Commands are thin: they parse arguments, make a control call, and render the reply. Heavy
work happens in the daemon. Exit codes: 0 success, 1 error, 2 usage error (bad arguments,
or parameters the daemon refused as invalid), 3 no daemon running.

Global options (``--data-dir``, ``--json``, ``--log-level``) are accepted before or after any
subcommand, nested ones included: every parser level knows them, with ``SUPPRESS`` as its
default, so a level that does not see an option never overwrites what another level parsed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn

from peerlight.node.control.protocol import ControlError
from peerlight.node.paths import NodePaths

from . import (
    daemon_commands,
    device_commands,
    feedback_commands,
    index_commands,
    library_commands,
    search_commands,
    service_commands,
    share_commands,
    ui_commands,
)
from .client import ConnectionLost, DaemonNotRunning
from .errors import EXIT_ERROR, EXIT_NOT_RUNNING, EXIT_USAGE, CliError, UsageError
from .output import Output

Command = Callable[[argparse.Namespace, NodePaths, Output], int]

LOG_LEVELS = ("debug", "info", "warning", "error")
GLOBAL_DEFAULTS = {"data_dir": None, "json": False, "log_level": None}
# Errors the daemon reports about the request itself: the caller used it wrongly.
USAGE_CODES = frozenset({"invalid_params"})


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are exceptions, so ``main`` can report them as JSON."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _global_options() -> argparse.ArgumentParser:
    common = Parser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument(
        "--data-dir", metavar="DIR", help="node data directory (default: $PEERLIGHT_HOME or the platform's user data dir)"
    )
    common.add_argument("--json", action="store_true", help="print machine-readable JSON")
    common.add_argument("--log-level", choices=LOG_LEVELS, help="log level (for start: overrides daemon.log_level)")
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _global_options()
    parser = Parser(prog="peerlight", description="Peerlight: a peer-to-peer media sharing node.", parents=[common])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, run: Command, help: str, parent: argparse._SubParsersAction = commands) -> argparse.ArgumentParser:
        sub = parent.add_parser(name, parents=[common], help=help, description=help)
        sub.set_defaults(run=run)
        return sub

    init = command("init", daemon_commands.cmd_init, "create a node: data directory, config file and identity key")
    init.add_argument("--if-missing", action="store_true", help="succeed quietly if a node already exists")

    start = command("start", daemon_commands.cmd_start, "run the daemon (in the foreground unless --detach)")
    start.add_argument("--detach", action="store_true", help="run in the background with a pid file and log file")
    start.add_argument("--timeout", type=float, default=60.0, help="with --detach: seconds to wait for ready")

    stop = command("stop", daemon_commands.cmd_stop, "stop the running daemon")
    stop.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for it to exit")

    command("status", daemon_commands.cmd_status, "show whether the daemon runs, its peer ID and catalog state")

    ui = command("ui", ui_commands.cmd_ui, "open the web UI in your browser, logged in (or print its one-time login link)")
    ui.add_argument("--no-browser", action="store_true", help="only print the login link")
    ui_actions = ui.add_subparsers(dest="ui_command", metavar="ACTION")
    password = command("password", ui_commands.cmd_ui_password, "set the password of the UI served to other machines (ui.remote_listen)", ui_actions)
    password.add_argument("--clear", action="store_true", help="remove it: nobody logs in from another machine")
    password.add_argument("--stdin", action="store_true", help="read it from standard input (one line) instead of asking twice")

    service = commands.add_parser("service", parents=[common], help="run the daemon as a service of your login session (systemd, launchd)")
    service_actions = service.add_subparsers(dest="service_command", required=True, metavar="ACTION")
    for name, run, help_text in (
        ("install", service_commands.cmd_service_install, "write the user unit (or launch agent), enable it and start the daemon"),
        ("uninstall", service_commands.cmd_service_uninstall, "stop and disable the service, and remove its file"),
        ("status", service_commands.cmd_service_status, "whether the service is installed, enabled and running"),
    ):
        action = command(name, run, help_text, service_actions)
        action.add_argument("--manager", choices=["systemd", "launchd"], help="default: launchd on macOS, systemd elsewhere")
        if name != "status":
            action.add_argument("--write-only", action="store_true", help="only write (or remove) the file: run no systemctl or launchctl")
        if name == "install":
            action.add_argument("--no-start", action="store_true", help="enable it for the next login, but do not start it now")
            action.add_argument("--linger", action="store_true", help="systemd: also `loginctl enable-linger`, so it starts at boot and outlives logout")

    library = commands.add_parser("library", parents=[common], help="manage the folders the node indexes")
    library_commands_ = library.add_subparsers(dest="library_command", required=True, metavar="ACTION")
    add = command("add", library_commands.cmd_library_add, "add a folder as a library", library_commands_)
    add.add_argument("path", help="folder to add")
    add.add_argument("--name", help="display name (default: the folder's name)")
    command("list", library_commands.cmd_library_list, "list libraries", library_commands_)
    remove = command("remove", library_commands.cmd_library_remove, "remove a library (id, path or name)", library_commands_)
    remove.add_argument("library", help="library id, path or name")

    index = command("index", index_commands.cmd_index, "rescan libraries now (all, or one)")
    index.add_argument("library", nargs="?", help="library id, path or name")
    index.add_argument("--wait", action="store_true", help="show progress until indexing and embedding are done")
    index.add_argument("--problems", action="store_true", help="list the files that could not be indexed, with why")
    index.add_argument("--all", action="store_true", help="with --problems: also files that are simply not media")
    index.add_argument("--limit", type=int, default=1000, help="with --problems: at most this many rows (default 1000)")

    models = command(
        "models", index_commands.cmd_models, "list the embedding models (weights, state, dimension, id); train-adapter"
    )
    models.add_argument("--no-load", action="store_true", help="report without trying to load the models")
    model_actions = models.add_subparsers(dest="models_action", required=False, metavar="ACTION")
    train = command(
        "train-adapter", index_commands.cmd_train_adapter, "train an importance-ordering adapter for an encoder", model_actions
    )
    train.add_argument("--encoder", choices=["image", "text", "audio"], required=True, help="which model's vectors")
    train.add_argument("--corpus", help="text file (one text per line) or folder of .txt/.md files; default: stored vectors")
    train.add_argument(
        "--align-to", choices=["image", "text", "audio"],
        help="instead of ordering, bring the encoder into this role's space by aligning text towers (needs --corpus)",
    )
    train.add_argument("--steps", type=int, help="training steps (default 1000)")
    train.add_argument("--seed", type=int, default=0, help="random seed (training is deterministic given it)")

    fit = command(
        "ordering", index_commands.cmd_ordering_fit, "how well an encoder's ordering suits this library (its prefixes against the library's own PCA)", model_actions
    )
    fit.add_argument("--encoder", choices=["image", "text", "audio"], default="text", help="which model's stored vectors (default text)")

    search = command("search", search_commands.cmd_search, "search the local index (and peers' shares with --peers)")
    search.add_argument("query", help="what to look for, in words")
    search.add_argument("--mode", choices=["semantic", "text", "hybrid"], default="hybrid", help="default: hybrid")
    search.add_argument("--peers", action="store_true",
                        help="also ask known peers' shares: those you added or joined, and the best 10 of the others by their topics; slow peers are left out")
    search.add_argument("--global", dest="global_", action="store_true",
                        help="also ask the 10 shares on the DHT whose topics are nearest the query (found by topic, never all)")
    search.add_argument("--send-text", action="store_true",
                        help="with --peers: also send the query's text to shares found by discovery (by default they get a vector prefix at most)")
    search_commands.add_filter_arguments(search)

    share = commands.add_parser("share", parents=[common], help="this node's Data Servers (shares)")
    share_actions = share.add_subparsers(dest="share_command", required=True, metavar="ACTION")

    def share_options(sub: argparse.ArgumentParser, creating: bool) -> None:
        sub.add_argument("--scope", choices=["local", "lan", "global"], default="local" if creating else None,
                         help="where it listens: loopback, LAN interfaces (mDNS), or everywhere (DHT)")
        sub.add_argument("--permission", choices=["public", "members", "devices"],
                         help="who may use it (default: devices on loopback, i.e. this node's own user and paired devices; members on lan and global)")
        sub.add_argument("--public-can", metavar="CAPS", help="what anyone may do with a public share: search,browse,fetch (default: all three; 'none' on edit)")
        sub.add_argument("--collection", action="append", required=creating, metavar="PATH",
                         help="a library or a folder in one (repeatable)")
        sub.add_argument("--modality", action="append", choices=[*search_commands.MODALITIES, *(() if creating else ("all",))],
                         help="only these kinds (repeatable)" + ("" if creating else "; 'all' for every kind again"))
        sub.add_argument("--port", type=int, help="TCP port (default: chosen once, then kept)")

    create = command("create", share_commands.cmd_share_create, "create a share", share_actions)
    create.add_argument("name")
    share_options(create, creating=True)
    command("list", share_commands.cmd_share_list, "list this node's shares", share_actions)
    for name, run, help in (
        ("show", share_commands.cmd_share_show, "show a share: peer ID, addresses, traffic"),
        ("pause", share_commands.cmd_share_pause, "stop serving a share (it stops listening)"),
        ("resume", share_commands.cmd_share_resume, "serve a paused share again"),
        ("remove", share_commands.cmd_share_remove, "remove a share and its identity"),
    ):
        command(name, run, help, share_actions).add_argument("name")
    grant = command("grant", share_commands.cmd_share_grant, "let a peer (or whoever uses an invite) search, browse or fetch", share_actions)
    grant.add_argument("name")
    grantee = grant.add_mutually_exclusive_group(required=True)
    grantee.add_argument("--to", metavar="PEERID", help="the peer's node ID (`peerlight status` shows it on their machine)")
    grantee.add_argument("--invite", action="store_true", help="an open invite: bound to the first peer that joins with it")
    grant.add_argument("--can", metavar="CAPS", help="comma-separated: search,browse,fetch (default: all three)")
    grant.add_argument("--expires", type=share_commands.parse_duration, metavar="DURATION", help="e.g. 30d, 12h (default: never)")
    grant.add_argument("--requests-per-minute", type=int, metavar="N", help="at most N requests a minute")
    grant.add_argument("--bytes-per-day", type=int, metavar="N", help="at most N bytes fetched a day")
    command("grants", share_commands.cmd_share_grants, "list a share's grants", share_actions).add_argument("name")
    revoke = command("revoke", share_commands.cmd_share_revoke, "revoke a grant at once (running transfers stop)", share_actions)
    revoke.add_argument("name")
    revoke.add_argument("grant", help="the grant's id (see `share grants`)")
    access = command("log", share_commands.cmd_share_log, "who asked a share for what, allowed or denied (newest first)", share_actions)
    access.add_argument("name")
    access.add_argument("--limit", type=int, default=50, help="entries shown (default 50)")
    access.add_argument("--denied", action="store_true", help="refusals only")
    edit = command("edit", share_commands.cmd_share_edit, "change a share", share_actions)
    edit.add_argument("name")
    edit.add_argument("--rename", metavar="NEW_NAME", help="a new name")
    edit.add_argument("--yes", action="store_true", help="confirm widening a public share's scope (LAN or internet) without --permission")
    share_options(edit, creating=False)

    peers = commands.add_parser("peers", parents=[common], help="other nodes' shares this node knows")
    peers_actions = peers.add_subparsers(dest="peers_command", required=False, metavar="ACTION")
    peers.set_defaults(run=share_commands.cmd_peers_list)
    add_peer = command("add", share_commands.cmd_peers_add, "add a share by its multiaddr (/ip4/…/tcp/…/p2p/…)", peers_actions)
    add_peer.add_argument("address")
    add_peer.add_argument("--wait", action="store_true", help="copy its catalog before returning, with a progress bar (default: in the background)")
    command("list", share_commands.cmd_peers_list, "list known shares", peers_actions)
    forget = command("remove", share_commands.cmd_peers_remove, "forget a share", peers_actions)
    forget.add_argument("peer", help="peer ID or name")

    devices = commands.add_parser("devices", parents=[common], help="the user's other nodes, paired with this one")
    devices_actions = devices.add_subparsers(dest="devices_command", required=False, metavar="ACTION")
    devices.set_defaults(run=device_commands.cmd_devices_list)
    pair = command("pair", device_commands.cmd_devices_pair, "pair with another node of yours by a short code", devices_actions)
    pair.add_argument("--join", metavar="CODE@ADDRESS", help="use the code the other node showed (without it: show a code here)")
    pair.add_argument(
        "--scope",
        choices=["local", "lan", "global"],
        default="lan",
        help="where the devices share listens (default: the LAN; global: between homes, through a relay behind a NAT)",
    )
    command("list", device_commands.cmd_devices_list, "list paired devices", devices_actions)
    unpair = command("unpair", device_commands.cmd_devices_unpair, "unpair a device (its access stops at once)", devices_actions)
    unpair.add_argument("device", help="its peer ID or name")

    join = command("join", share_commands.cmd_join, "use an invite to another node's share")
    join.add_argument("invite", help="the peerlight-invite:… string you were given")

    discover = command("discover", share_commands.cmd_discover, "ask every known share for its manifest now")
    discover.add_argument("--lan", action="store_true", help="shares found on the LAN only")
    discover.add_argument("--global", dest="global_", action="store_true", help="shares found on the DHT only")

    fetch = command("fetch", share_commands.cmd_fetch, "download a file from a peer's share, verified, resumable")
    fetch.add_argument("share", help="the share's name or peer ID")
    fetch.add_argument("item", help="a file name in the share, or a content hash")
    fetch.add_argument("--to", default=".", help="folder to save into (default: here)")

    preview = command("preview", share_commands.cmd_preview, "a peer's preview of an item: a thumbnail, an audio snippet or a text excerpt")
    preview.add_argument("share", help="the share's name or peer ID")
    preview.add_argument("item", help="a file name in the share, or a content hash")
    preview.add_argument("--to", default=".", help="folder for a thumbnail or snippet (default: here)")

    similar = command("similar", search_commands.cmd_similar, "find items like a file (indexed or not)")
    similar.add_argument("path", help="an example media file")
    search_commands.add_filter_arguments(similar)

    info = command("info", search_commands.cmd_info, "show what the index knows about a file")
    info.add_argument("path", help="an indexed file")

    item_help = "an indexed file, a content hash, or its first 8+ hex digits (a peer's item too)"
    rate = command("rate", feedback_commands.cmd_rate, "rate an item from 0 to 10 (ratings never leave this machine)")
    rate.add_argument("item", help=item_help)
    rate.add_argument("rating", type=float, help="0 (dislike) to 10 (love)")
    like = command("like", feedback_commands.cmd_like, "like an item (a rating of 8)")
    like.add_argument("item", help=item_help)
    dislike = command("dislike", feedback_commands.cmd_dislike, "dislike an item (a rating of 1; never recommended)")
    dislike.add_argument("item", help=item_help)
    unrate = command("unrate", feedback_commands.cmd_unrate, "take back an item's rating")
    unrate.add_argument("item", help=item_help)
    event = command("event", feedback_commands.cmd_event, "record that an item was opened, finished, skipped or watched (for players)")
    event.add_argument("item", help=item_help)
    event.add_argument("kind", choices=["opened", "finished", "skipped", "watched"])
    event.add_argument("--value", type=float, help="watched: the fraction of its length, 0 to 1")

    ratings = commands.add_parser("ratings", parents=[common], help="the ratings kept on this machine")
    ratings_actions = ratings.add_subparsers(dest="ratings_command", required=False, metavar="ACTION")
    ratings.set_defaults(run=feedback_commands.cmd_ratings_list, limit=50)
    listed = command("list", feedback_commands.cmd_ratings_list, "list ratings, newest first", ratings_actions)
    listed.add_argument("--limit", type=int, default=50, help="ratings shown (default 50)")
    export = command("export", feedback_commands.cmd_ratings_export, "write ratings as CSV (or as XMP sidecars beside images)", ratings_actions)
    export.add_argument("file", nargs="?", help="CSV file to write (default: standard output)")
    export.add_argument("--xmp", nargs="?", const=True, metavar="FOLDER", help="write IMAGE.xmp star ratings beside rated images (under FOLDER)")
    imported = command("import", feedback_commands.cmd_ratings_import, "read ratings from a CSV, or from images' XMP sidecars", ratings_actions)
    imported.add_argument("file", nargs="?", help="CSV with content_hash or path, and rating (0-10) or stars (0-5); with --xmp: a folder")
    imported.add_argument("--xmp", action="store_true", help="read the xmp:Rating of the sidecars beside indexed images")

    recommend = command("recommend", feedback_commands.cmd_recommend, "what to see next, here and from peers, ranked by your taste")
    recommend.add_argument("--modality", action="append", choices=search_commands.MODALITIES, help="only this kind (repeatable)")
    source = recommend.add_mutually_exclusive_group()
    source.add_argument("--from-peers", action="store_true", help="peers' items only (ranked from their cached prefixes)")
    source.add_argument("--local", action="store_true", help="this node's items only")
    recommend.add_argument("--limit", type=int, default=20, help="number of items (default 20)")
    recommend.add_argument("--explain", action="store_true", help="show the rated items that drove each score")
    recommend.add_argument("--include-rated", action="store_true", help="also items already rated (never disliked ones)")
    recommend.add_argument("--temperature", type=float, help="smart shuffle: randomness in rating units (default 0: strict order)")
    recommend.add_argument("--exploration", type=float, help="bonus per unit of uncertainty (default 0.5)")
    recommend.add_argument("--diversity", type=float, help="0 to 1: how much similar items push each other down (default 0.3)")
    recommend.add_argument("--novelty", type=float, help="penalty for items seen recently, in rating units (default 1.5)")
    recommend.add_argument("--seed", type=int, help="seed of the shuffle (repeatable lists)")

    recommender = commands.add_parser("recommender", parents=[common], help="the local preference model")
    recommender_actions = recommender.add_subparsers(dest="recommender_command", required=False, metavar="ACTION")
    recommender.set_defaults(run=feedback_commands.cmd_recommender_status)
    command("status", feedback_commands.cmd_recommender_status, "the model's version, spaces and kept versions", recommender_actions)
    command("retrain", feedback_commands.cmd_recommender_retrain, "train now on all feedback", recommender_actions)
    command("rollback", feedback_commands.cmd_recommender_rollback, "go back to the previous model", recommender_actions)

    duplicates = command("duplicates", search_commands.cmd_duplicates, "list identical and near-duplicate items")
    duplicates.add_argument("--threshold", type=float, default=0.95, help="cosine similarity for near-duplicates")
    duplicates.add_argument("--modality", action="append", choices=search_commands.MODALITIES)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The parsed command line, with the global options' defaults filled in; raises UsageError."""
    args = build_parser().parse_args(argv)
    for key, default in GLOBAL_DEFAULTS.items():
        if not hasattr(args, key):
            setattr(args, key, default)
    return args


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else argv
    try:
        args = parse_args(raw)
    except UsageError as exc:
        # Parsing failed, so --json was perhaps not parsed: look for it among the words.
        Output(as_json="--json" in raw).error(str(exc), code="usage")
        return EXIT_USAGE
    out = Output(as_json=args.json)
    paths = NodePaths.resolve(args.data_dir)
    try:
        return args.run(args, paths, out)
    except DaemonNotRunning as exc:
        out.error(str(exc), code="not_running")
        return EXIT_NOT_RUNNING
    except UsageError as exc:
        out.error(str(exc), code="usage")
        return EXIT_USAGE
    except ControlError as exc:
        out.error(exc.message, code=exc.code)
        return EXIT_USAGE if exc.code in USAGE_CODES else EXIT_ERROR
    except (CliError, ConnectionLost, TimeoutError, OSError) as exc:
        out.error(str(exc) or type(exc).__name__)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
