"""A grant's bytes of the day end a transfer on the limit to the byte, whatever the frame sizes."""

from __future__ import annotations

import pytest

from peerlight.node.serving.handlers import _Allowance
from peerlight.p2p import wire
from peerlight.p2p.errors import Forbidden
from peerlight.p2p.server import Permit

ENVELOPE = {"ok": True, "data": b"", "hash": bytes(32), "more": True}


def test_data_fitting_is_exact_where_the_headers_grow() -> None:
    for budget in [*range(0, 400), *range(65_400, 65_700), *range(1_048_000, 1_048_700, 7)]:
        n = wire.data_fitting(budget, ENVELOPE, "data")
        packed = len(wire.pack(ENVELOPE | {"data": bytes(n)}))
        assert packed <= budget or (n == 0 and len(wire.pack(ENVELOPE)) > budget)
        assert len(wire.pack(ENVELOPE | {"data": bytes(n + 1)})) > budget
        assert wire.packed_size(ENVELOPE, "data", n) == packed


class Budget(Permit):
    """A permit with ``left`` bytes of the day, charged as the server would charge it."""

    def __init__(self, left: int) -> None:
        self.left = left

    def remaining(self) -> int:
        return self.left

    def charge(self, size: int) -> None:
        assert size <= self.left, "the server would refuse this frame"
        self.left -= size


def serve(file_size: int, budget: int, chunk: int = 1024 * 1024) -> tuple[int, str]:
    """A fetch of ``file_size`` bytes under ``budget``, framed and charged as the server does it:
    (data bytes sent, how it ended)."""
    permit, allowance = Budget(budget), _Allowance(Budget(0))
    allowance._permit = permit
    header = {"hash": "0" * 64, "size": file_size, "offset": 0, "length": file_size, "chunk_bytes": chunk}
    pending = header
    allowance.sent(header)
    sent, position = 0, 0
    try:
        while position < file_size:
            piece = memoryview(bytes(min(chunk, file_size - position)))
            data, last = allowance.cut(piece, finishing=position + len(piece) == file_size)
            frame = {"data": data, "hash": bytes(32)}
            allowance.sent(frame, len(data))
            permit.charge(len(wire.pack({"ok": True, **pending, "more": True})))  # the frame before goes out
            pending = frame
            if last:
                raise Forbidden("used up")
            position += len(data)
            sent += len(data)
        permit.charge(len(wire.pack({"ok": True, **pending, "more": True})))
        permit.charge(len(wire.pack({"ok": True, "done": True})))
        return sent, "done"
    except Forbidden:
        permit.charge(len(wire.pack({"ok": True, **pending, "more": True})))  # sent before the refusal
        return sent + len(pending["data"]), f"forbidden, {permit.left} left"


@pytest.mark.parametrize("file_size", [10, 300, 70_000, 600_000, 3 * 1024 * 1024 + 5])
@pytest.mark.parametrize("budget", [500, 65_600, 700_000, 1_048_690, 2_000_000, 2_097_300])
def test_a_transfer_ends_exactly_on_the_day_s_limit_or_completes(file_size: int, budget: int) -> None:
    sent, ending = serve(file_size, budget)
    if ending == "done":
        assert sent == file_size
    else:
        left = int(ending.split(", ")[1].split()[0])
        # On the limit, or short of it by less than the smallest data frame (then nothing fits).
        assert ending.startswith("forbidden") and left < wire.packed_size(ENVELOPE, "data", 1), (sent, ending)
        assert sent < file_size
