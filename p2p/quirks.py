"""Every workaround for py-libp2p 0.8.1, in one place, each with the defect it answers.

The daemon runs for weeks on this library, so its known defects (verified on this machine,
see ``docs/protocol.md`` and the project notes) are neutralised here rather than in the
code that uses a host. Each function names the defect; ``tests/test_p2p_host.py`` proves
each one is needed (the defect shows without it) or that the symptom is gone.

Nothing here edits the installed package: instance attributes, module constants and class
attributes only. Each patch replaces something of a given shape; :func:`check_patch_targets`
(run once, before the first host is made) asserts that every such thing exists with that
shape, so a libp2p other than the pinned 0.8.1 fails at start with :class:`IncompatibleLibp2p`
naming what moved, instead of silently bringing a defect back. (Not at this module's import:
importing libp2p is slow, and the CLI imports this package without ever making a host.)
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import os
from typing import Any

import trio

log = logging.getLogger("peerlight.p2p")

PINNED_VERSION = "0.8.1"


class IncompatibleLibp2p(RuntimeError):
    """The installed py-libp2p lacks something a workaround here replaces: it is not the pinned version."""


def _require(owner: Any, name: str, *, parameters: tuple[str, ...] | None = None, kind: type | None = None) -> None:
    where = f"{getattr(owner, '__module__', '')}.{getattr(owner, '__qualname__', getattr(owner, '__name__', owner))}.{name}"
    if not hasattr(owner, name):
        raise IncompatibleLibp2p(f"{where} is missing: Peerlight's workarounds are written for libp2p=={PINNED_VERSION}")
    value = getattr(owner, name)
    if kind is not None and not isinstance(value, kind):
        raise IncompatibleLibp2p(f"{where} is a {type(value).__name__}, not a {kind.__name__} (libp2p=={PINNED_VERSION} expected)")
    if parameters is not None:
        found = tuple(inspect.signature(value).parameters)
        if found[: len(parameters)] != parameters:
            raise IncompatibleLibp2p(f"{where}{found} no longer takes {parameters} (libp2p=={PINNED_VERSION} expected)")


@functools.cache
def check_patch_targets() -> None:
    """Every attribute a workaround below replaces or relies on exists, with the shape it had in 0.8.1."""
    import libp2p.network.swarm as swarm
    import libp2p.stream_muxer.yamux.yamux as yamux
    import libp2p.transport.tcp.tcp as tcp
    from libp2p.io.trio import TrioTCPStream
    from libp2p.peer.peerstore import PeerStore
    from libp2p.protocol_muxer.multiselect_client import MultiselectClient

    _require(yamux, "MAX_MESSAGE_SIZE", kind=int)  # tune_bulk_transfer
    _require(tcp, "TrioTCPStream", kind=type)  # buffered_tcp_reads
    _require(TrioTCPStream, "read", parameters=("self", "n"))
    _require(swarm, "_HAPPY_EYEBALLS_DELAY", kind=float)  # no_dial_delay
    _require(swarm.Swarm, "_do_handle_inbound_connection", parameters=("self", "read_write_closer", "maddr", "failure_event"))  # release_inbound_slots
    _require(swarm.Swarm, "upgrade_inbound_raw_conn", parameters=("self", "raw_conn", "maddr"))
    _require(PeerStore, "clear_addrs", parameters=("self", "peer_id"))  # replace_addresses
    _require(PeerStore, "add_addrs", parameters=("self", "peer_id", "addrs", "ttl"))
    _require(MultiselectClient, "select_one_of", parameters=("self", "protocols", "communicator"))  # typed_protocol_refusal
    _require(MultiselectClient, "try_select", parameters=("self", "communicator", "protocol"))
    import libp2p.relay.circuit_v2.dcutr as dcutr
    from libp2p.host.basic_host import BasicHost
    from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol

    _require(dcutr, "_local_tcp_listen_addrs", parameters=("host",))  # hole_punch_from_listen_ports
    _require(dcutr.DCUtRProtocol, "_get_observed_addrs", parameters=("self",))  # holepunch.py's subclass
    _require(dcutr.DCUtRProtocol, "_decode_observed_addrs", parameters=("self", "addr_bytes"))
    _require(dcutr.DCUtRProtocol, "_perform_hole_punch", parameters=("self", "peer_id", "addrs", "as_responder"))
    _require(dcutr.DCUtRProtocol, "_handle_dcutr_stream", parameters=("self", "stream"))
    _require(dcutr.DCUtRProtocol, "_try_unilateral_upgrade", parameters=("self", "peer_id"))
    _require(dcutr.DCUtRProtocol, "initiate_hole_punch", parameters=("self", "peer_id"))
    _require(dcutr.DCUtRProtocol, "_auto_drive_loop", parameters=("self",))
    _require(BasicHost, "get_addrs", parameters=("self",))  # announce_circuit_addresses
    _require(swarm.Swarm, "remove_notifee", parameters=("self", "notifee"))  # holepunch's inbound gate
    for name in ("_handle_reserve", "_handle_connect", "_handle_hop_stream", "_handle_stop_stream", "_relay_data"):  # relay.py's subclasses
        _require(CircuitV2Protocol, name)
    import libp2p.kad_dht.provider_store as provider_store

    _require(provider_store, "BUCKET_SIZE", kind=int)  # more_providers_per_key

PROVIDERS_PER_KEY = 256


def more_providers_per_key() -> None:
    """A DHT server keeps 256 providers of a key, not the first 20 that came.

    py-libp2p 0.8.1 refuses a key's 21st provider (``BUCKET_SIZE``, the routing table's k,
    reused as a cap): a topic held by hundreds of shares would list the 20 that announced
    first, whatever they hold, and the rest could never be found (go-libp2p, the public DHT's
    servers, keeps every provider). The module's name is read at every ``add_provider``, and
    in that module it bounds nothing else. 256 records of ~100 bytes keep an answer far within
    the 4 MiB message limit; a server's memory stays bounded by the keys near it.
    """
    import libp2p.kad_dht.provider_store as provider_store

    provider_store.BUCKET_SIZE = PROVIDERS_PER_KEY


# Yamux frames: 4 Noise messages' worth of plaintext (65519 bytes each), within the default
# 256 KiB receive window. The default, 65536, is 17 bytes over one Noise message, so every
# frame became two messages (the second of 17 bytes): half the per-message overhead is gone.
YAMUX_FRAME_BYTES = 4 * 65519


def tune_bulk_transfer() -> None:
    """Faster streams: bigger Yamux frames (sender) and one window update per frame read (receiver).

    - ``MAX_MESSAGE_SIZE`` is looked up on every write, so the module constant is enough.
    - ``PY_YAMUX_RELEASE_ON_READ=1`` (the default) sends a window update for every ``read()``;
      off, credit is released per frame, which the Yamux spec allows. Read at stream creation.
    Measured: ~110-160 MB/s out of the box, ~440 MB/s with both (two processes, loopback).
    """
    import libp2p.stream_muxer.yamux.yamux as yamux

    yamux.MAX_MESSAGE_SIZE = YAMUX_FRAME_BYTES
    os.environ.setdefault("PY_YAMUX_RELEASE_ON_READ", "0")


TCP_READ_BYTES = 256 * 1024


def buffered_tcp_reads() -> None:
    """One ``recv`` of up to 256 KiB serves many of the small reads above it.

    Noise reads each message as a 2-byte length and then its body, and Yamux each frame as a
    12-byte header and then its body, every one a ``recv`` syscall and a trip through trio.
    The TCP transport builds its streams from the module global ``TrioTCPStream`` at accept
    and dial time, so a subclass set there buffers every connection our hosts make or take.
    Measured with bulk fetches: the receiver, the limit, spends ~1/5 of its time fewer.
    """
    import libp2p.transport.tcp.tcp as tcp
    from libp2p.io.trio import TrioTCPStream

    if getattr(tcp.TrioTCPStream, "buffered", False):
        return

    class BufferedTCPStream(TrioTCPStream):  # type: ignore[misc]
        buffered = True

        def __init__(self, stream: Any) -> None:
            super().__init__(stream)
            self._chunk = b""
            self._offset = 0
            self._refill = trio.Lock()  # one refill at a time, or a second reader's would overwrite the first's

        def _take(self, n: int | None) -> bytes:
            start = self._offset
            end = len(self._chunk) if n is None else min(len(self._chunk), start + n)
            data = self._chunk if start == 0 and end == len(self._chunk) else self._chunk[start:end]
            self._offset = end
            if end >= len(self._chunk):
                self._chunk, self._offset = b"", 0
            return data

        async def read(self, n: int | None = None) -> bytes:
            if n == 0:
                return b""
            if self._offset < len(self._chunk):
                return self._take(n)  # no await: nothing can interleave
            async with self._refill:
                if self._offset < len(self._chunk):  # another reader refilled meanwhile
                    return self._take(n)
                chunk = await super().read(max(n or 0, TCP_READ_BYTES))
                if not chunk or n is None or len(chunk) <= n:
                    return chunk  # EOF, or all of it wanted: nothing kept
                self._chunk, self._offset = chunk, 0
                return self._take(n)

    tcp.TrioTCPStream = BufferedTCPStream


def no_dial_delay() -> None:
    """``connect()`` waited a fixed 250 ms (a happy-eyeballs head start it waits out even when the
    first dial succeeds at once). We dial one address at a time ourselves (:func:`dial_one`),
    so the head start has nothing to protect."""
    import libp2p.network.swarm as swarm

    swarm._HAPPY_EYEBALLS_DELAY = 0.0


def release_inbound_slots(swarm: Any) -> None:
    """Free an inbound connection's slot and task when the connection closes.

    Defect: the swarm's inbound handler waits for the *swarm* to finish after upgrading a
    connection ("intentional barrier"), holding an inbound slot and a trio task for the
    host's lifetime. After ``max_connections - min_connections`` (250) inbound connections
    ever, every new one is refused. Here the handler waits for the connection's own end.
    It replaces the library's handler for TCP only (what our hosts listen on), and skips its
    connection gate, which our hosts leave at its allow-everything default.
    """
    from libp2p.network.connection.raw_connection import RawConnection

    async def handle(read_write_closer: Any, maddr: Any, failure_event: Any) -> None:
        raw_conn = None
        try:
            raw_conn = RawConnection(read_write_closer, False)
            muxed = await swarm.upgrade_inbound_raw_conn(raw_conn, maddr)
        except Exception as exc:  # a failed handshake: the peer's problem, not ours
            log.debug("inbound connection failed its upgrade: %s", exc)
            with trio.move_on_after(1):
                try:
                    await (raw_conn or read_write_closer).close()
                except Exception:
                    pass
            return
        closed = getattr(muxed, "event_closed", None)
        if closed is None:  # not Yamux: keep the library's behaviour
            await swarm.manager.wait_finished()
        else:
            await closed.wait()

    swarm._do_handle_inbound_connection = handle


LISTENER_CLOSE_SECONDS = 5.0


async def close_listeners(swarm: Any) -> None:
    """Stop listening, even when the host stops because its task was cancelled.

    Defect: the swarm closes its listeners on the way out of ``host.run()``, but
    ``TCPListener.close`` first takes a ``trio.Lock``; under cancellation that checkpoint raises
    ``Cancelled``, the close is skipped, and the socket keeps listening (in a system task) for
    the life of the process: a withdrawn pairing offer or a removed share still answers on its
    port. Closed here, shielded and bounded, before the swarm's own (then idempotent) close.
    """
    _require(swarm, "listeners", kind=dict)
    with trio.CancelScope(shield=True), trio.move_on_after(LISTENER_CLOSE_SECONDS):
        for listener in list(swarm.listeners.values()):
            try:
                await listener.close()
            except Exception as exc:  # a listener that fails to close must not keep the others open
                log.debug("a listener failed to close: %s", exc)


def forget_failed_dial(swarm: Any, peer_id: Any) -> None:
    """A failed dial puts the peer in a 60 s negative cache, so the next (good) address would be
    refused without being tried: forget the failure before trying the next one."""
    _require(swarm, "_negative_peer_cache")
    swarm._negative_peer_cache.evict(str(peer_id))


_REFUSED: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("peerlight_refused_protocols", default=None)


def typed_protocol_refusal() -> None:
    """Raise a typed error when the peer refused every protocol asked for with ``na``.

    Defect: ``select_one_of`` catches the typed ``ProtocolNotSupportedError`` of each refusal
    and raises a plain ``MultiselectClientError`` whose text is the only trace (libp2p's own
    request-response module searches that text). Here each refusal is recorded (per task,
    in a context variable) and a selection that ends with every protocol refused raises
    ``ProtocolNotSupportedError`` (a subclass: the library's own handling is unchanged),
    chained from the original error."""
    from libp2p.protocol_muxer.exceptions import MultiselectClientError, ProtocolNotSupportedError
    from libp2p.protocol_muxer.multiselect_client import MultiselectClient

    if getattr(MultiselectClient.select_one_of, "peerlight_typed", False):
        return
    select_one_of, try_select = MultiselectClient.select_one_of, MultiselectClient.try_select

    async def recording_try_select(self: Any, communicator: Any, protocol: Any) -> Any:
        try:
            return await try_select(self, communicator, protocol)
        except ProtocolNotSupportedError:
            refused = _REFUSED.get()
            if refused is not None:
                refused.append(str(protocol))
            raise

    async def typed_select_one_of(self: Any, protocols: Any, communicator: Any, *args: Any, **kwargs: Any) -> Any:
        refused: list[str] = []
        token = _REFUSED.set(refused)
        try:
            return await select_one_of(self, protocols, communicator, *args, **kwargs)
        except MultiselectClientError as error:
            if protocols and len(refused) == len(protocols):
                raise ProtocolNotSupportedError(f"refused with na: {', '.join(refused)}") from error
            raise
        finally:
            _REFUSED.reset(token)

    typed_select_one_of.peerlight_typed = True  # type: ignore[attr-defined]
    MultiselectClient.try_select = recording_try_select
    MultiselectClient.select_one_of = typed_select_one_of


def refused_protocol(error: BaseException) -> bool:
    """Whether ``error`` (or anything it was raised from) is the peer's ``na`` (see :func:`typed_protocol_refusal`)."""
    from libp2p.protocol_muxer.exceptions import ProtocolNotSupportedError

    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ProtocolNotSupportedError):
            return True
        current = current.__cause__ or current.__context__
    return False


def replace_addresses(host: Any, peer_id: Any, addresses: list[Any]) -> None:
    """The dialer tries one address per transport: a stale address in the peerstore makes
    ``connect()`` fail although a good one is known. So the peerstore holds exactly the
    address being dialled."""
    store = host.get_peerstore()
    store.clear_addrs(peer_id)
    store.add_addrs(peer_id, addresses, 3600)


def announce_circuit_addresses(host: Any, circuits: Any) -> None:
    """0.8.1's ``get_addrs`` cuts an address at its first ``/p2p/`` and appends the host's own id:
    a circuit address (``…/p2p/<relay>/p2p-circuit``) became the relay's own address under this
    host's id, and the relay was announced as us. ``circuits()`` (addresses ending in
    ``/p2p-circuit``) are appended here whole, after what ``get_addrs`` gives, so identify, the
    DHT's provider records and peer routing announce them."""
    from multiaddr import Multiaddr

    original = host.get_addrs

    def get_addrs() -> list[Any]:
        own = f"/p2p/{host.get_id()}"
        return [*original(), *(Multiaddr(circuit + own) for circuit in circuits())]

    host.get_addrs = get_addrs


@functools.cache
def hole_punch_from_listen_ports() -> None:
    """0.8.1's hole punching reads the host's TCP listen ports from its *announced* addresses
    (``get_addrs``), to predict its NAT mapping and to bind its dials' source. A global share
    announces public addresses only, so behind a NAT it had none: no prediction, dials from
    ephemeral ports, never a punch. The ports come from the addresses it listens on here
    (not loopback, unspecified or link-local: a dial from 127.0.0.1 reaches nobody)."""
    import ipaddress

    import libp2p.relay.circuit_v2.dcutr as dcutr

    from .holepunch import routable_tcp
    from .listen import lan_addresses

    def local_tcp_listen_addrs(host: Any) -> list[tuple[int, str, int]]:
        found = []
        for address in host.get_transport_addrs():
            if routable_tcp(address):
                family = 6 if address.protocols()[0].name == "ip6" else 4
                found.append((family, str(address.value_for_protocol(f"ip{family}")), int(address.value_for_protocol("tcp"))))
        # The first is the punch's source: a public address, else the likely home network
        # (physical interfaces before container and VM bridges: a SYN from docker0 reaches nobody).
        likely = {ip: rank for rank, ip in enumerate(lan_addresses())}
        return sorted(found, key=lambda entry: (not ipaddress.ip_address(entry[1]).is_global, likely.get(entry[1], len(likely))))

    dcutr._local_tcp_listen_addrs = local_tcp_listen_addrs
