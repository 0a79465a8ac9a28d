"""The node daemon, recording every byte it sends to a peer before encryption.

Run as ``python tests/recording_node.py --data-dir … [daemon options]`` with
``PEERLIGHT_TEST_RECORD`` naming the file to append to. Every libp2p connection of the node is
secured by Noise, and everything sent on one (multistream negotiation, Yamux frames, identify,
every Peerlight protocol's frames) passes through ``SecureSession.write`` as plaintext first:
recording there sees all of it. A test then searches the record for what must never leave.
"""

import os
import runpy
import sys

from libp2p.security.secure_session import SecureSession

_record = open(os.environ["PEERLIGHT_TEST_RECORD"], "ab", buffering=0)  # noqa: SIM115 (open for the process's life)
_send = SecureSession.write


async def _recorded(self: SecureSession, data: bytes) -> None:
    _record.write(len(data).to_bytes(4, "big") + bytes(data))
    await _send(self, data)


SecureSession.write = _recorded  # type: ignore[method-assign]
sys.argv = ["peerlight.node", *sys.argv[1:]]
runpy.run_module("peerlight.node", run_name="__main__")
