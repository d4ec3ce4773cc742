"""Who is asking, and in which roles (guideline Art. 3, 6): roles come from Unix groups.

A caller is a Unix uid: the peer's, from SO_PEERCRED on the control socket, or the process's own in
direct mode. Its roles are those whose group (``roles.*_group``) lists the user in the group
database at the moment of the request, primary group included; the process's own supplementary
groups are not trusted, so removing a user from a group takes effect at once, even for a login
session that still carries the old groups. Root is not a role: root has the roles of root's groups
(on an appliance the contractor's technician is root, and must not thereby be a manager).

The kernel's login uid (``/proc/PID/loginuid``, kept across sudo and su) is recorded beside the uid
when it differs, so that "root" in the audit log still says who logged in.

The web console asks *for* a signed-in person (:func:`resolve_name`): the caller is then that user,
with the roles the group database gives them now, ``via`` "console" and the browser's address.
"""
from __future__ import annotations

import grp
import ipaddress
import os
import pwd
import re
from collections.abc import Iterable
from dataclasses import dataclass

from storage.scrub import scrub  # noqa: F401 (free text bound for the audit log: see storage.scrub)

from .config import Config

MANAGER, STAFF, TECHNICIAN, AUDITOR = "manager", "staff", "technician", "auditor"
ROLES = (MANAGER, STAFF, TECHNICIAN, AUDITOR)  # also the order in which the acting role is chosen
GROUP_KEYS = {role: f"roles.{role}_group" for role in ROLES}
NO_LOGIN_UID = 4294967295


@dataclass(frozen=True, slots=True)
class Caller:
    user: str
    uid: int
    roles: tuple[str, ...]
    via: str  # "socket" | "direct" | "console"
    pid: int | None = None
    login_uid: int | None = None  # only when set and different from uid
    client_ip: str | None = None  # via the console: the browser's address

    def role_for(self, allowed: Iterable[str]) -> str | None:
        """The role under which the caller may do something allowed to ``allowed`` (None: none)."""
        allowed = set(allowed)
        return next((r for r in self.roles if r in allowed), None)

    def describe(self) -> str:
        roles = ", ".join(self.roles) if self.roles else "no role"
        return f"{self.user} (uid {self.uid}; {roles})"


def group_names(user: str, primary_gid: int) -> set[str]:
    names = set()
    for gid in os.getgrouplist(user, primary_gid):
        try:
            names.add(grp.getgrgid(gid).gr_name)
        except KeyError:
            continue
    return names


def roles_of(user: str, primary_gid: int | None, config: Config) -> tuple[str, ...]:
    if primary_gid is None:
        return ()
    names = group_names(user, primary_gid)
    return tuple(role for role in ROLES if config[GROUP_KEYS[role]] in names)


def login_uid(pid: int | None) -> int | None:
    try:
        with open(f"/proc/{pid if pid else 'self'}/loginuid", encoding="ascii") as f:
            value = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return None if value == NO_LOGIN_UID else value


def resolve(uid: int, config: Config, *, via: str, pid: int | None = None) -> Caller:
    """The caller with uid ``uid`` and the roles the group database gives it now."""
    try:
        pw = pwd.getpwuid(uid)
        user, gid = pw.pw_name, pw.pw_gid
    except KeyError:
        user, gid = f"uid-{uid}", None
    lu = login_uid(pid)
    return Caller(user, uid, roles_of(user, gid, config), via, pid, lu if lu is not None and lu != uid else None)


USER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}")  # a login name (also user@domain through sssd)


def client_address(text: object) -> str | None:
    """``text`` as an IPv4 or IPv6 address literal (normalised), or None when it is anything else
    (a host name, a zone id, a port, spaces)."""
    if not isinstance(text, str) or not 2 <= len(text) <= 45 or "%" in text:
        return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def resolve_name(name: str, config: Config, *, client_ip: str, via: str = "console") -> Caller | None:
    """The user called ``name`` with the roles the group database gives them now (None: no such
    user). Nothing of the asking process (its groups, its login uid) is carried over."""
    if not USER_NAME.fullmatch(name):
        return None
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        return None
    return Caller(pw.pw_name, pw.pw_uid, roles_of(pw.pw_name, pw.pw_gid, config), via, None, None, client_ip)


def members(role: str, config: Config) -> set[str]:
    """Users with ``role`` (listed in its group, or having it as their primary group)."""
    try:
        group = grp.getgrnam(config[GROUP_KEYS[role]])
    except KeyError:
        return set()
    users = set(group.gr_mem)
    users.update(p.pw_name for p in pwd.getpwall() if p.pw_gid == group.gr_gid)
    return users


def has_role(user: str, role: str, config: Config) -> bool:
    try:
        gid = pwd.getpwnam(user).pw_gid
    except KeyError:
        return False
    return role in roles_of(user, gid, config)


# -- caller numbers: masked for technicians, never in the audit log ------------------------------


def mask_number(number: str) -> str:
    """``09011112222`` -> ``*********22``: the last two digits only, the form kept."""
    digits = [i for i, ch in enumerate(number) if ch.isdigit()]
    keep = set(digits[-2:])
    return "".join(ch if (not ch.isdigit() or i in keep) else "*" for i, ch in enumerate(number))
