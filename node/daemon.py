"""The node daemon: one trio nursery hosting the node's services.

Start-up order matters for the user: everything that can fail on bad input (config,
identity, lock, catalog) is checked before the control socket opens, so a daemon either
serves completely or exits with a message naming the cause. Shutdown (SIGINT, SIGTERM or
``peerlight stop``) stops accepting requests, lets running ones finish within
``daemon.shutdown_grace_seconds``, then closes the catalog, so committed writes stay
committed; a second signal cancels at once.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import trio

from peerlight.embeddings.default_adapters import shipped_codebooks
from peerlight.p2p.relay import RelayLimits
from peerlight.recommender.ranking import RankingSettings

from .auto_adapters import AutoAdapters, AutoAdapterSettings
from .catalog import Catalog
from .catalog.items import item_counts
from .config import Config, NetworkOptions
from .decoders import DecoderLimits, DecoderPool
from .control.protocol import PROTOCOL_VERSION
from .control.server import ControlServer, Handler, Streaming
from .identity import NodeIdentity
from .index.indexer import Indexer
from .index.embedder import Embedder
from .api.daemon import DaemonMethods
from .api.index import IndexMethods, ModelMethods
from .api.library import LibraryMethods
from .api.search import SearchMethods
from .api.devices import DeviceMethods
from .api.feedback import FeedbackMethods
from .api.items import ItemMethods
from .api.ui import UiMethods
from .api.shares import PeerMethods, ShareMethods
from .pairing import Pairing
from .peers.client import PeerClient
from .model_id_renames import adapter_renames, log_renames, rename_adapter_files, rename_in_catalog, stored_under_old_ids
from .serving.adapter_files import AdapterFiles, adapter_folders
from .serving.servers import DataServers, GlobalReach
from .metrics import serve_metrics
from .models import ModelManager
from .recommendations import Recommendations, RecommenderSettings
from .search.engine import SearchEngine
from .search.vector_indexes import IndexSettings, VectorIndexes
from .service_notify import ServiceNotifier
from .supervisor import Supervisor, describe_error
from .webui.app import WebUi
from .webui.passwords import UiPassword
from .webui.server import RemoteDoor, UiServer
from .webui.sessions import Sessions, ui_host_label
from .paths import NodePaths

log = logging.getLogger("peerlight.daemon")


def peerlight_version() -> str:
    try:
        return version("peerlight")
    except PackageNotFoundError:
        return "unknown"


class Daemon:
    """A running node. ``run`` returns after a clean shutdown."""

    def __init__(self, paths: NodePaths, config: Config, identity: NodeIdentity) -> None:
        self.paths = paths
        self.config = config
        self.identity = identity
        self.peer_id = identity.peer_id
        self.name = config.node.name or socket.gethostname()
        self._catalog: Catalog | None = None
        self._stop = trio.Event()
        self._started_at = time.time()
        self._started_monotonic = time.monotonic()
        self.supervisor = Supervisor()
        self.ui_sessions = Sessions(config.ui.session_hours * 3600)
        self.ui_server: UiServer | None = None
        self.ui_password = UiPassword(self.paths.root / "ui-password")

    def request_stop(self, reason: str) -> None:
        if not self._stop.is_set():
            log.info("shutting down", extra={"reason": reason})
            self._stop.set()

    async def run(self, on_ready: Callable[[], None] = lambda: None) -> None:
        self._catalog = await Catalog.open(self.paths.catalog, readers=self.config.catalog.readers)
        await self._rename_model_ids()
        self.models = ModelManager(self.config, partial(self.config.resolve_path, self.paths.root), self.paths.adapters)
        indexes = VectorIndexes(
            self._catalog,
            self.paths.vector_indexes,
            IndexSettings(self.config.search.prefix_length, self.config.search.shortlist, self.config.search.save_interval_seconds),
        )
        self.search = SearchEngine(self._catalog, self.models, indexes)
        options = self.config.index
        # Native decoders in worker processes: a file that crashes one costs a worker, not the daemon.
        self.decoders = (
            DecoderPool(DecoderLimits(workers=options.workers + 1, memory_bytes=options.decoder_memory_mb * 2**20))
            if options.isolate_decoders
            else None
        )
        self.embedder = Embedder(self._catalog, self.models, self.config, self.decoders)
        self.search.embed_example = self.embedder.embed_example
        chosen = self.config.recommender
        self.recommendations = Recommendations(
            self._catalog,
            indexes,
            RecommenderSettings(chosen.model, chosen.retrain_delay_seconds, RankingSettings(chosen.exploration, chosen.novelty, chosen.diversity)),
        )
        self.embedder.on_embedded = self.recommendations.embedded
        self.auto_adapters = AutoAdapters(
            self._catalog,
            self.models,
            self.paths.adapters,
            lambda role: getattr(self.config, f"{role}_model").adapter,
            AutoAdapterSettings.from_config(self.config),
            on_switched=self.embedder.wake,
        )
        self.indexer = Indexer(
            self._catalog, self.config.index, exclude=(self.paths.root,), on_items_recorded=self.embedder.wake, decoders=self.decoders
        )
        self.data_servers: DataServers | None = None
        self.peers: PeerClient | None = None
        self.pairing: Pairing | None = None
        network = self.config.network
        if network.enabled:
            from peerlight.p2p.resources import ResourceLimits, ResourceManager
            from peerlight.p2p.server import Limits

            limits = Limits(streams_per_peer=network.streams_per_peer, requests_per_minute=network.requests_per_minute)
            codebooks = tuple(shipped_codebooks())  # the spaces whose topics global search routes by
            self.data_servers = DataServers(
                self._catalog,
                self.search,
                self.paths.share_keys,
                limits,
                network.max_connections,
                GlobalReach(
                    network.bootstrap,
                    network.reprovide_seconds,
                    relay_service=relay_limits(network) if network.relay_service else None,
                    relays=network.relays,
                    relays_kept=network.relays_kept,
                    hole_punching=network.hole_punching,
                ),
                AdapterFiles(adapter_folders(self.paths.adapters)),
                announce=network.announce,
                codebooks=codebooks,
                resources=ResourceManager(ResourceLimits(peers=network.max_active_peers, work=network.concurrent_work)),
                decoders=self.decoders,
                owner=self.identity.peer_id,
                on_file_changed=lambda library_id, path: self.indexer.request_scan(library_id, {path}),
            )
            self.peers = PeerClient(
                self._catalog,
                self.identity.seed,
                network.query_timeout_seconds,
                bootstrap=network.bootstrap,
                max_remote_items=network.max_remote_items,
                hole_punching=network.hole_punching and bool(network.bootstrap or network.relays),
                private_addresses=network.announce == "all",
                codebooks=codebooks,
                search_shares=network.search_shares,
            )
            self.pairing = Pairing(self._catalog, self.identity.seed, self.identity.peer_id, self.data_servers, self.peers)
        try:
            async with trio.open_nursery() as daemon_scope:
                await daemon_scope.start(self._watch_signals, daemon_scope.cancel_scope)
                await self._serve(on_ready)
                daemon_scope.cancel_scope.cancel()
        finally:
            if self.decoders is not None:
                await trio.to_thread.run_sync(self.decoders.close)
            await self._catalog.aclose()
            log.info("daemon stopped")

    async def _rename_model_ids(self) -> None:
        """Ids stored under version 1 of the adapter id recipe take their version 2 names."""
        assert self._catalog is not None
        renames = await trio.to_thread.run_sync(adapter_renames, adapter_folders(self.paths.adapters))
        await trio.to_thread.run_sync(rename_adapter_files, self.paths.adapters, renames)
        stored = await self._catalog.read(partial(stored_under_old_ids, renames=renames))
        if stored:  # once, on the first start after the recipe changed
            log_renames(stored, await self._catalog.write(partial(rename_in_catalog, renames=stored)))

    def _ui_path(self, text: str) -> Path:
        """A path of the ``[ui]`` options (a string there: ``~`` is expanded here, when used); a
        relative one lies in the data directory."""
        return self.config.resolve_path(self.paths.root, Path(text).expanduser())

    def _remote_door(self) -> RemoteDoor | None:
        """The UI's door for other machines, if ``ui.remote_listen`` opens one."""
        options = self.config.ui
        if not options.remote_listen:
            return None
        certificate, key = (str(self._ui_path(text)) if text else None for text in (options.tls_certificate, options.tls_key))
        return RemoteDoor(options.remote_listen, options.remote_port, certificate, key)

    async def _serve(self, on_ready: Callable[[], None]) -> None:
        assert self._catalog is not None
        methods = self._methods(self._catalog)
        server = ControlServer(
            self.paths.control_socket,
            methods,
            max_frame_bytes=self.config.control.max_frame_bytes,
            frame_timeout=self.config.control.frame_timeout_seconds,
        )
        self.control = server
        if self.config.ui.enabled:  # the web UI calls the same methods, in process, as the local user
            options = self.config.ui
            ui = WebUi(
                methods,
                self._catalog,
                self.ui_sessions,
                self.paths.root / "thumbnails",
                self.decoders,
                options.session_hours * 3600,
                self._ui_path(options.downloads),
                ui_host_label(self.identity.seed) if options.private_host else None,
                password=self.ui_password,
                remote_hosts=options.remote_hosts,
                remote_tls=bool(options.tls_certificate),
            )
            self.ui_server = UiServer(ui, options.port, self._remote_door(), options.max_connections, options.loopback_other_users)
        async with trio.open_nursery() as control:
            await control.start(server.serve)
            async with trio.open_nursery() as services:
                for name, service in (
                    ("models", self.models.run),
                    ("embedder", self.embedder.run),
                    ("indexer", self.indexer.run),
                    ("vector indexes", self.search.indexes.maintain),
                    ("adapters", self.auto_adapters.run),
                    ("recommender", self.recommendations.run),
                    ("data servers", self.data_servers.run if self.data_servers else None),
                    ("peer client", self.peers.run if self.peers else None),
                    ("pairing", self.pairing.run if self.pairing else None),
                    ("metrics", partial(serve_metrics, self.config.network.metrics_port, self.metrics) if self.config.network.metrics_port else None),
                    ("web ui", self.ui_server.run if self.ui_server else None),
                ):
                    if service is not None:
                        await self.supervisor.start(services, name, service)
                log.info(
                    "daemon ready",
                    extra={"peer_id": self.peer_id, "data_dir": str(self.paths.root), "pid": os.getpid()},
                )
                on_ready()
                manager = ServiceNotifier.from_environment()
                if manager is not None:  # started by systemd (a Type=notify unit)
                    manager.notify(READY="1", MAINPID=str(os.getpid()), STATUS=f"serving {self.paths.root}")
                    services.start_soon(manager.keep_alive, self._healthy)
                await self._stop.wait()
                if manager is not None:
                    manager.notify(STOPPING="1", STATUS="stopping")
                server.close()
                # Background work stops now; a write it has started still commits.
                self.indexer.close()
                services.cancel_scope.cancel()
            # Running requests may be committing writes: give them the grace period.
            control.cancel_scope.deadline = trio.current_time() + self.config.daemon.shutdown_grace_seconds

    async def _healthy(self) -> bool:
        """What the service manager's watchdog is told: the event loop runs (this is awaited in
        it) and the catalog answers a read through its worker threads."""
        assert self._catalog is not None
        try:
            return await self._catalog.read(lambda conn: conn.execute("SELECT 1").fetchone()) == (1,)
        except Exception as exc:  # a closed or broken catalog: no ping, and the manager restarts us
            log.warning("health check: the catalog does not answer", extra={"reason": describe_error(exc)})
            return False

    def _methods(self, catalog: Catalog) -> dict[str, Handler | Streaming]:
        return (
            DaemonMethods(self).methods()
            | LibraryMethods(catalog, self.paths.root, on_change=self.indexer.libraries_changed).methods()
            | IndexMethods(catalog, self.indexer, self.embedder).methods()
            | ModelMethods(self.models, self.embedder, catalog, self.paths.adapters, self.search.indexes.prefix_for).methods()
            | SearchMethods(catalog, self.search, self.peers).methods()
            | ShareMethods(catalog, self.data_servers, self.paths.share_keys).methods()
            | PeerMethods(catalog, self.peers).methods()
            | DeviceMethods(catalog, self.pairing, self.data_servers).methods()
            | FeedbackMethods(catalog, self.recommendations).methods()
            | ItemMethods(catalog).methods()
            | UiMethods(self.ui_sessions, self.ui_password, lambda: self.ui_server).methods()
        )

    async def _watch_signals(
        self, everything: trio.CancelScope, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            async for signum in signals:
                if self._stop.is_set():
                    log.warning("second signal: cancelling running requests now")
                    everything.cancel()
                    return
                self.request_stop(signal.Signals(signum).name)

    async def status(self) -> dict[str, Any]:
        """What ``peerlight status`` shows; cheap (counters and a few rows), so it can be polled."""
        assert self._catalog is not None
        index = await self._catalog.read(item_counts)
        libraries = await self._catalog.read(lambda conn: conn.execute("SELECT COUNT(*) FROM libraries").fetchone()[0])
        counts = {"libraries": libraries, "items": index["items"], "index": index}
        index["busy"] = self.indexer.progress.busy or self.embedder.pass_running
        return {
            "running": True,
            "version": peerlight_version(),
            "protocol_version": PROTOCOL_VERSION,
            "pid": os.getpid(),
            "name": self.name,
            "peer_id": self.peer_id,
            "data_dir": str(self.paths.root),
            "config_file": str(self.paths.config),
            "log_file": str(self.config.resolve_path(self.paths.root, self.config.daemon.log_file)),
            "started_at": self._started_at,
            "uptime_seconds": round(time.monotonic() - self._started_monotonic, 3),
            "catalog": {"path": str(self.paths.catalog), "schema_version": self._catalog.schema_version, **counts},
            "vector_indexes": self.search.indexes.describe(),
            "services": self.supervisor.describe(),
            "requests_in_flight": self.control.requests_in_flight,
            "shares": self.data_servers.describe() if self.data_servers else [],
            "peers_budget": self.data_servers.resources.describe() if self.data_servers else None,
            "conditions": self.conditions(),
        }

    def metrics(self) -> dict[str, Any]:
        """What the metrics endpoint exposes: live counters only, cheap enough for every scrape."""
        return {
            "shares": self.data_servers.describe() if self.data_servers else [],
            "requests_in_flight": self.control.requests_in_flight,
            "services": self.supervisor.describe(),
        }

    def conditions(self) -> list[dict[str, str]]:
        """Faults the node is living with now, each with what it means for the user."""
        assert self._catalog is not None
        found = []
        if self._catalog.disk_full:
            found.append({"name": "disk_full", "message": f"the disk is full; writes wait for space: {self._catalog.disk_full}"})
        if self.search.indexes.save_failure:
            found.append({"name": "index_save", "message": f"vector indexes cannot be saved: {self.search.indexes.save_failure}"})
        if self.indexer.watching.startswith("failed"):
            found.append({"name": "watcher", "message": f"filesystem notifications {self.indexer.watching}; periodic rescans go on"})
        for share in self.data_servers.describe() if self.data_servers else []:
            if share["state"] == "failed":
                found.append({"name": "share", "message": f"share {share['name']} cannot serve ({share['error']}); retrying"})
        for service in self.supervisor.services.values():
            if service.state == "restarting":
                found.append({"name": "service", "message": f"{service.name} failed ({service.last_error}); restarting"})
        return found


def relay_limits(network: NetworkOptions) -> RelayLimits:
    """What this node's relay gives peers behind NATs (``network.relay_*``)."""
    return RelayLimits(
        reservations=network.relay_reservations,
        circuits=network.relay_circuits,
        circuits_per_peer=network.relay_circuits_per_peer,
        circuit_bytes=network.relay_circuit_bytes,
        circuit_seconds=network.relay_circuit_seconds,
        reservation_seconds=network.relay_reservation_seconds,
    )
