"""A Prometheus text endpoint on loopback (off unless ``metrics.listen`` is set).

The main loop publishes a snapshot once a second; the HTTP thread only reads the last snapshot, so
it never touches the pipeline's state. The port is bound when the server is made (a port taken is
an OSError then), served once ``start()`` is called, and let go at ``stop()``.
"""
from __future__ import annotations

from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from storage.worker import Worker

from .counters import TABLE

COUNTERS = {c.name: c.help for c in TABLE}  # name -> help text (recorderd/counters.py)


class MetricsServer(Worker):
    name = "metrics"
    essential = False  # the service records on without its Prometheus endpoint

    def __init__(self, listen: str) -> None:
        super().__init__()
        host, _, port = listen.rpartition(":")
        self.body = b""
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                if self.path != "/metrics":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.end_headers()
                self.wfile.write(server.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer((host.strip("[]"), int(port)), Handler)

    def run(self) -> None:
        self.httpd.serve_forever(poll_interval=0.5)

    def wake(self) -> None:
        self.httpd.shutdown()

    def publish(self, counters: Mapping[str, int], active_calls: int, health: Any) -> None:
        lines = []
        for c in TABLE:  # a counter is NAME_total; a gauge (a state) is NAME
            metric = f"recorderd_{c.name}" + ("_total" if c.kind == "counter" else "")
            lines += [f"# HELP {metric} {c.help}", f"# TYPE {metric} {c.kind}", f"{metric} {counters.get(c.name, 0)}"]
        lines += ["# TYPE recorderd_active_calls gauge", f"recorderd_active_calls {active_calls}",
                  "# TYPE recorderd_store_free_bytes gauge", f"recorderd_store_free_bytes {health.free_bytes}"]
        self.body = ("\n".join(lines) + "\n").encode()

    def stop(self) -> None:
        super().stop()
        self.httpd.server_close()  # the port is let go, started or not
