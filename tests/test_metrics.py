"""The Prometheus endpoint: loopback only, the counters a technician watches."""
from __future__ import annotations

import socket
import urllib.request
from collections import Counter
from types import SimpleNamespace

import pytest

from recorderd.config import _listen
from recorderd.metrics import MetricsServer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_metrics_text() -> None:
    port = free_port()
    server = MetricsServer(f"127.0.0.1:{port}")
    server.start()
    try:
        server.publish(Counter(calls_recorded=3, kernel_drops=0, packets=1200), 2, SimpleNamespace(free_bytes=12345))
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        server.stop()
    assert "recorderd_calls_recorded_total 3" in body
    assert "recorderd_packets_total 1200" in body
    assert "recorderd_active_calls 2" in body and "recorderd_store_free_bytes 12345" in body


@pytest.mark.parametrize("value", ["0.0.0.0:9687", "192.0.2.1:80", "127.0.0.1", "127.0.0.1:99999"])
def test_metrics_only_on_loopback(value: str) -> None:
    with pytest.raises(ValueError):
        _listen(value)
