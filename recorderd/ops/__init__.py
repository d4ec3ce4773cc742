"""The operations of ``recorderctl``: one set, whichever way the request came in (the control
socket, direct mode, the console through the socket).

:mod:`recorderd.ops.framework` holds what every operation shares: the arguments, the context, the
registry and :func:`run` with its role check and its audit row. Each module below registers the
actions of one job with ``@action``; the package imports them all here, so the registry is full
whichever part of it is imported first. A new module of operations is added to ``MODULES``
(tests/test_ops_registry.py fails for one left out).
"""
from __future__ import annotations

from . import access, casework, playback, records, reporting, requests, signin, upkeep
from .framework import (
    ACTIONS,
    ANSWERED_UNAUDITED,
    CASEWORK_FILE,
    QUIET_WHEN_ALLOWED,
    SIGN_IN_ACTIONS,
    UNKNOWN_USER,
    Action,
    Args,
    Context,
    LiveView,
    NotAllowed,
    OpError,
    Output,
    Reply,
    UsageError,
    action,
    deny,
    iso,
    parse_when,
    run,
    session,
)

MODULES = (access, casework, playback, records, reporting, requests, signin, upkeep)

__all__ = ["ACTIONS", "ANSWERED_UNAUDITED", "CASEWORK_FILE", "MODULES", "QUIET_WHEN_ALLOWED", "SIGN_IN_ACTIONS",
           "UNKNOWN_USER", "Action", "Args", "Context", "LiveView", "NotAllowed", "OpError", "Output", "Reply",
           "UsageError", "action", "deny", "iso", "parse_when", "run", "session"]
