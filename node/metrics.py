"""An optional Prometheus endpoint, on loopback only: the node's traffic where dashboards can see it.

Off unless ``network.metrics_port`` is set. The text format comes from ``prometheus_client``
(a custom collector reads the live counters at each scrape); the HTTP side is a few lines of
trio, so no server thread runs beside the event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio

log = logging.getLogger("peerlight.metrics")

REQUEST_LIMIT = 8192
REQUEST_TIMEOUT = 5.0


class _Collector:
    def __init__(self, status: Callable[[], dict[str, Any]]) -> None:
        self._status = status

    def collect(self):  # type: ignore[no-untyped-def]
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        status = self._status()
        requests = CounterMetricFamily("peerlight_share_requests", "Requests answered by a share, by protocol", labels=["share", "protocol"])
        errors = CounterMetricFamily("peerlight_share_errors", "Requests refused or failed, by error code", labels=["share", "protocol", "code"])
        traffic = CounterMetricFamily("peerlight_share_bytes", "Bytes received and sent by a share", labels=["share", "protocol", "direction"])
        latency = GaugeMetricFamily("peerlight_share_latency_seconds", "Request latency over the last 1024 requests", labels=["share", "protocol", "quantile"])
        connections = GaugeMetricFamily("peerlight_share_connections", "Open connections of a share", labels=["share"])
        for share in status["shares"]:
            name = share["name"]
            connections.add_metric([name], share.get("connections", 0))
            for protocol, stats in (share.get("protocols") or {}).items():
                requests.add_metric([name, protocol], stats["requests"])
                for code, n in stats["errors"].items():
                    errors.add_metric([name, protocol, code], n)
                traffic.add_metric([name, protocol, "in"], stats["bytes_in"])
                traffic.add_metric([name, protocol, "out"], stats["bytes_out"])
                for quantile, key in (("0.5", "p50"), ("0.99", "p99")):
                    value = stats["latency_ms"][key]
                    if value is not None:
                        latency.add_metric([name, protocol, quantile], value / 1000)
        in_flight = GaugeMetricFamily("peerlight_control_requests_in_flight", "Control API requests running")
        in_flight.add_metric([], status["requests_in_flight"])
        restarts = CounterMetricFamily("peerlight_service_restarts", "Restarts of a background service after a failure", labels=["service"])
        for service in status["services"]:
            restarts.add_metric([service["name"]], service.get("restarts", 0))
        yield from (requests, errors, traffic, latency, connections, in_flight, restarts)


def render(status: Callable[[], dict[str, Any]]) -> bytes:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(status))
    return generate_latest(registry)


async def serve_metrics(port: int, status: Callable[[], dict[str, Any]], *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Answer ``GET /metrics`` on 127.0.0.1:``port`` (never another interface)."""
    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
    task_status.started()

    async def answer(stream: trio.SocketStream) -> None:
        try:
            request = b""
            with trio.move_on_after(REQUEST_TIMEOUT):
                while b"\r\n\r\n" not in request and len(request) < REQUEST_LIMIT:
                    data = await stream.receive_some(REQUEST_LIMIT)
                    if not data:
                        break
                    request += data
            line = request.split(b"\r\n", 1)[0].split()
            if len(line) >= 2 and line[0] == b"GET" and line[1].split(b"?")[0] == b"/metrics":
                body, head = render(status), b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
            else:
                body, head = b"not found: try /metrics\n", b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n"
            with trio.move_on_after(REQUEST_TIMEOUT):
                await stream.send_all(head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await stream.aclose()

    await trio.serve_listeners(answer, listeners)
