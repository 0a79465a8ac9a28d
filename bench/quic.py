"""QUIC against TCP in py-libp2p 0.8.1: should a global share listen on QUIC as well?

Two hosts in this process, on loopback, each transport with the library's own defaults (TCP:
Noise + Yamux, no Peerlight tuning; QUIC: ``/udp/…/quic-v1`` over aioquic, TLS 1.3 and QUIC's
own streams): one stream carries N MB of random bytes. The figure is MB/s of each; the ratio is
QUIC's over TCP's. (Peerlight's tuned TCP host is faster still: ``bench/p2p_transfer.py``.)

    python bench/quic.py [--megabytes 64]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from blob import BLOB, receive_blob, send_blob  # noqa: E402
from common import emit  # noqa: E402

async def throughput(quic: bool, size: int) -> float:
    """MB/s of one stream of ``size`` bytes between two hosts on QUIC (or TCP)."""
    from libp2p import new_host
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.peer.peerinfo import PeerInfo
    from multiaddr import Multiaddr

    options = {"enable_quic": True} if quic else {}
    server, client = (new_host(key_pair=create_new_key_pair(), **options) for _ in range(2))
    server.set_stream_handler(BLOB, send_blob)
    listen = [Multiaddr("/ip4/127.0.0.1/udp/0/quic-v1" if quic else "/ip4/127.0.0.1/tcp/0")]
    async with server.run(listen_addrs=listen), client.run(listen_addrs=listen):
        await client.connect(PeerInfo(server.get_id(), [server.get_addrs()[0]]))
        stream = await client.new_stream(server.get_id(), [BLOB])
        _, rate = await receive_blob(stream, size)
        return rate


async def main(megabytes: int) -> None:
    size = megabytes * 10**6
    tcp = await throughput(False, size)
    quic = await throughput(True, size)
    emit("quic", megabytes=megabytes, tcp_mb_s=round(tcp, 1), quic_mb_s=round(quic, 1), quic_over_tcp=round(quic / tcp, 3))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=64)
    trio.run(main, parser.parse_args().megabytes)
