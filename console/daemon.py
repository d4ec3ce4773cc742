"""The console's only way to the recordings: the daemon's control socket, acting for the person.

Every call names the signed-in user and the browser's address; the daemon accepts that only from
this process's uid, re-reads the user's groups and checks the role again, and audits the request
with ``via: console`` and the address. The socket calls block, so they run in a worker thread.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool

from recorderd import client, ops


@dataclass(frozen=True)
class Daemon:
    socket: str

    async def call(self, action: str, args: dict[str, Any], *, user: str, ip: str,
                   sinks: dict[str, Any] | None = None) -> ops.Reply:
        """The daemon's reply; :class:`client.Unreachable` / :class:`client.Busy` when it is not there."""
        return await run_in_threadpool(self.call_sync, action, args, user=user, ip=ip, sinks=sinks)

    def call_sync(self, action: str, args: dict[str, Any], *, user: str, ip: str,
                  sinks: dict[str, Any] | None = None) -> ops.Reply:
        return client.call(self.socket, action, args, sinks or {}, acting_for={"user": user, "ip": ip})
