"""The console's sign-in accounting: ``console-signin`` and ``console-signout``.

The console checks the password with PAM itself; the daemon never sees a password. It tells the
daemon the outcome, acting for the person and their address (only the console's uid may:
:mod:`recorderd.control`), so that every sign-in, failed or not, is in the audit log: a failure as
``denied: sign-in failed`` (or ``denied: sign-in locked`` when the console's lockout refused it
without asking PAM), a name the box does not know as ``(unknown user)``. For ``ok`` the reply
carries the person's roles, read from their groups now, for the console's menu; a person in no
role is refused (rc 3) and the console must not let them in.
"""
from __future__ import annotations

from . import UNKNOWN_USER, Args, Context, NotAllowed, Reply, action
from ..roles import ROLES

RESULTS = ("ok", "failed", "locked")


def _from_console(ctx: Context, name: str) -> None:
    if ctx.caller.via != "console":
        raise NotAllowed(f"{name} is the web console's (it is sent acting for the person signing in)")


@action("console-signin", no_role=True)
def console_signin(ctx: Context, args: Args) -> Reply:
    _from_console(ctx, "console-signin")
    result = args.choice("result", RESULTS)
    ctx.note(result=result)
    if result != "ok":
        ctx.result = f"denied: sign-in {result}"
        return Reply(text=f"sign-in {result}: recorded", data={"recorded": True, "result": result})
    if ctx.caller.user == UNKNOWN_USER:
        raise NotAllowed("this box does not know that user")
    if not ctx.caller.roles:
        groups = ", ".join(ctx.group(r) for r in ROLES)
        raise NotAllowed(f"{ctx.caller.user} is in none of the recorderd role groups ({groups}): "
                         "ask the manager to add you to the group of your role")  # fmt: skip
    return Reply(text=f"{ctx.caller.user} signed in ({', '.join(ctx.caller.roles)})",
                 data={"user": ctx.caller.user, "roles": list(ctx.caller.roles)})  # fmt: skip


@action("console-signout", no_role=True)
def console_signout(ctx: Context, args: Args) -> Reply:
    _from_console(ctx, "console-signout")
    reason = args.opt("reason", 20)
    if reason is not None and reason not in ("signout", "idle", "expired"):
        reason = "other"
    ctx.note(reason=reason or "signout")
    return Reply(text=f"{ctx.caller.user} signed out", data={"user": ctx.caller.user})
