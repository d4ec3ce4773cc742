"""The console's sign-in accounting: ``console-signin`` and ``console-signout``.

The console checks the password with PAM itself; the daemon never sees a password. It tells the
daemon the outcome, acting for the person and their address (only the console's uid may:
:mod:`recorderd.control`), so that every sign-in, failed or not, is in the audit log: a failure as
``denied: sign-in failed`` (or ``denied: sign-in locked`` when the console's lockout refused it
without asking PAM), a name the box does not know as ``(unknown user)``. For ``ok`` the reply
carries the person's roles, read from their groups now, for the console's menu; a person in no
role is refused (rc 3) and the console must not let them in. So are root and the box's system
accounts (uid below ``UID_MIN`` of /etc/login.defs, and nobody), whatever their groups: no person
signs in to the console as a service account.

A name or address the lockout keeps refusing is audited once per lockout window; the console
counts the refusals after that one (and the sign-ins its per-address rate limit refused without
asking PAM) and sends their number in one row: ``locked`` or ``limited`` with ``count``, audited
as ``denied: sign-in locked`` / ``denied: sign-in rate-limited`` with the count in the detail.
"""
from __future__ import annotations

from ..roles import ROLES
from .framework import UNKNOWN_USER, Args, Context, NotAllowed, Reply, UsageError, action

RESULTS = ("ok", "failed", "locked", "limited")
NOBODY = 65534
MAX_COUNT = 10**9


def uid_min(path: str = "/etc/login.defs") -> int:
    """The first uid of a person's account on this box (``UID_MIN``; 1000 if unset)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "UID_MIN" and parts[1].isdigit():
                    return int(parts[1])
    except OSError:
        pass
    return 1000


def system_account(uid: int) -> bool:
    return uid == 0 or uid == NOBODY or 0 <= uid < uid_min()


def _from_console(ctx: Context, name: str) -> None:
    if ctx.caller.via != "console":
        raise NotAllowed(f"{name} is the web console's (it is sent acting for the person signing in)")


@action("console-signin", no_role=True)
def console_signin(ctx: Context, args: Args) -> Reply:
    _from_console(ctx, "console-signin")
    result = args.choice("result", RESULTS)
    ctx.note(result=result)
    if args.raw.get("count") is not None:
        count = args.int("count")
        if not 0 < count <= MAX_COUNT:
            raise UsageError(f"count must be 1 to {MAX_COUNT}")
        ctx.note(count=count)
    if result != "ok":
        ctx.result = f"denied: sign-in {'rate-limited' if result == 'limited' else result}"
        return Reply(text=f"sign-in {result}: recorded", data={"recorded": True, "result": result})
    if ctx.caller.user == UNKNOWN_USER:
        raise NotAllowed("this box does not know that user")
    if system_account(ctx.caller.uid):
        raise NotAllowed(f"{ctx.caller.user} is a system account (uid {ctx.caller.uid}): "
                         "the console is for people's accounts only")
    if not ctx.caller.roles:
        groups = ", ".join(ctx.group(r) for r in ROLES)
        raise NotAllowed(f"{ctx.caller.user} is in none of the recorderd role groups ({groups}): "
                         "ask the manager to add you to the group of your role")
    return Reply(text=f"{ctx.caller.user} signed in ({', '.join(ctx.caller.roles)})",
                 data={"user": ctx.caller.user, "roles": list(ctx.caller.roles)})


@action("console-signout", no_role=True)
def console_signout(ctx: Context, args: Args) -> Reply:
    _from_console(ctx, "console-signout")
    reason = args.opt("reason", 20)
    if reason is not None and reason not in ("signout", "idle", "expired"):
        reason = "other"
    ctx.note(reason=reason or "signout")
    return Reply(text=f"{ctx.caller.user} signed out", data={"user": ctx.caller.user})
