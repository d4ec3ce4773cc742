"""``recorderd-console``: the console's HTTPS server (uvicorn), as the unit runs it.

HTTPS only (``console.tls_cert`` / ``console.tls_key``); uvicorn's own access log is off (it would
print query strings: a search's caller digits): the console logs method, path, status and time.
"""
from __future__ import annotations

import argparse
import logging
import sys

import uvicorn

from recorderd import version
from recorderd.config import ConfigError, load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recorderd-console", description="The recorder's web console (HTTPS).")
    parser.add_argument("--config", default="/etc/recorderd/recorderd.yaml", help="site config")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        config = load(args.config, dids_optional=True)
    except (ConfigError, OSError) as exc:
        print(f"recorderd-console: {exc}", file=sys.stderr)
        return 2
    from .app import create_app

    app = create_app(config)
    server = uvicorn.Server(uvicorn.Config(
        app, host=config["console.listen"], port=config["console.port"],
        ssl_certfile=config["console.tls_cert"], ssl_keyfile=config["console.tls_key"],
        access_log=False, log_config=None, server_header=False, date_header=False,
        timeout_keep_alive=5, limit_concurrency=200, h11_max_incomplete_event_size=16 * 1024,
    ))  # fmt: skip
    try:
        server.run()
    except OSError as exc:  # a port taken, a certificate that cannot be read
        print(f"recorderd-console: {exc}", file=sys.stderr)
        return 1
    return 0
