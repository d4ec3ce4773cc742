"""Transfers: the caller of a recorded call goes on being recorded after the operator transfers it.

A transfer gives the caller a new call (a new INVITE, a new Call-ID) from the caller's side to the
transfer target, an extension that is not designated. recorderd records it as the next part of the
same conversation: the new call inherits the recorded call's conversation token, its designated
number and label, and its caller; its part is the recorded call's part + 1, its ``part_reason``
"transfer".

- Blind transfer (RFC 3515): in the recorded dialog the contact centre's side sends REFER with
  ``Refer-To: <sip:TARGET@...>`` to the caller's side. The new INVITE matches it when its
  Request-URI user is TARGET, it comes from the address the REFER went to or from the recorded
  call's caller, within ``TRANSFER_WINDOW`` s of the REFER.
- Attended transfer (RFC 3891): the Refer-To carries ``?Replaces=CALL-ID;to-tag=..;from-tag=..``
  (the operator's consultation call); the new INVITE's ``Replaces`` header names that Call-ID.
  A ``Replaces`` naming a recorded call's own dialog (a pick-up of the recorded call) matches too.
- A B2BUA PBX that moves the caller to another phone with a re-INVITE in the same dialog needs
  nothing here: the dialog (and its recording) goes on, the media follows the new SDP.

Never by the caller's number alone: a REFER seen in the recorded dialog (or a Replaces naming it)
is needed. A REFER sent by the caller's side (the caller transfers the operator away) leaves the
caller's conversation: it is not followed.

A new INVITE to a designated number that says it comes from a transfer (``Referred-By`` or
``Replaces``), matches no recorded call, and follows a transfer seen in a dialog that was *not*
recorded (a REFER there with this target or Replaces, or a Replaces naming that dialog) is a call
first received on another number: it is not recorded (``calls_transferred_in``; only calls
received on the designated numbers are). A header alone is not enough: a call transferred to a
designated number on another system (a REFER the mirror never showed) arrives on the designated
number and is recorded.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote

from .sip import SipMessage, name_addr, uri_user

if TYPE_CHECKING:
    from .call import Call

TRANSFER_WINDOW = 32.0  # s after the REFER within which the caller's new INVITE comes
REFERS_PER_CALL = 4  # REFERs followed per recorded call (retransmissions are one)
MAX_REFERRALS = 1000  # referrals pending at most (a REFER flood stays bounded)


@dataclass
class Referral:
    call: Call  # the recorded call whose dialog carried the REFER
    at: float
    target: str  # the Refer-To's user
    replaces: str  # the Call-ID its Replaces names, or ""
    referee: bytes  # the address the REFER went to: the caller's side, which sends the new INVITE


class Transfers:
    def __init__(self) -> None:
        self.pending: dict[str, list[Referral]] = {}  # "t:" + target or "r:" + Replaces Call-ID -> REFERs
        self.count = 0
        self.elsewhere: dict[str, tuple[float, bytes]] = {}  # the same keys, REFERs of dialogs not recorded

    def refer(self, ts: float, call: Call, msg: SipMessage, dst: bytes, from_caller: bool) -> None:
        """A REFER in a recorded dialog. Only one the contact centre's side sent is followed."""
        if from_caller or self.count >= MAX_REFERRALS:
            return
        parsed = refer_target(msg)
        if parsed is None:
            return
        target, replaces = parsed
        key = "r:" + replaces if replaces else "t:" + target
        referrals = self.pending.setdefault(key, [])
        for r in referrals:
            if r.call is call and r.referee == dst:
                r.at = ts  # a retransmission
                return
        if sum(1 for rs in self.pending.values() for r in rs if r.call is call) >= REFERS_PER_CALL:
            return
        referrals.append(Referral(call, ts, target, replaces, dst))
        self.count += 1

    def refer_not_recorded(self, ts: float, msg: SipMessage, dst: bytes) -> None:
        """A REFER in a dialog that is not recorded: the INVITE that follows is a call transferred in."""
        parsed = refer_target(msg)
        if parsed is None or len(self.elsewhere) >= MAX_REFERRALS:
            return
        target, replaces = parsed
        self.elsewhere["r:" + replaces if replaces else "t:" + target] = (ts, dst)

    def _key(self, msg: SipMessage) -> str:
        replaces = replaces_call_id(msg)
        if replaces:
            return "r:" + replaces
        try:
            return "t:" + uri_user(msg.request_uri)
        except ValueError:
            return "t:"

    def match(self, ts: float, src: bytes, msg: SipMessage, caller: str) -> Referral | None:
        """The REFER this new INVITE follows, if any (taken: one INVITE per REFER)."""
        if not self.pending:
            return None
        key = self._key(msg)
        for r in self.pending.get(key, ()):
            if 0.0 <= ts - r.at <= TRANSFER_WINDOW and (src == r.referee or caller == r.call.caller):
                self.pending[key].remove(r)
                self.count -= 1
                if not self.pending[key]:
                    del self.pending[key]
                return r
        return None

    def transferred_in(self, ts: float, src: bytes, msg: SipMessage) -> bool:
        """The INVITE follows a REFER seen in a dialog that is not recorded."""
        seen = self.elsewhere.get(self._key(msg)) if self.elsewhere else None
        return seen is not None and 0.0 <= ts - seen[0] <= TRANSFER_WINDOW and src == seen[1]

    def expire(self, now: float) -> None:
        for key, referrals in list(self.pending.items()):
            kept = [r for r in referrals if now - r.at <= TRANSFER_WINDOW]
            self.count -= len(referrals) - len(kept)
            if kept:
                self.pending[key] = kept
            else:
                del self.pending[key]
        for key, (at, _src) in list(self.elsewhere.items()):
            if now - at > TRANSFER_WINDOW:
                del self.elsewhere[key]


def refer_target(msg: SipMessage) -> tuple[str, str] | None:
    """(the Refer-To's user, the Call-ID its ?Replaces= names or '') of a REFER; None when unusable."""
    value = msg.header("refer-to")
    if not value:
        return None
    try:
        uri = name_addr(value)[0]
        target = uri_user(uri)
    except ValueError:
        return None
    replaces = ""
    _, q, headers = uri.partition("?")
    if q:
        for item in headers.split("&"):
            name, _, v = item.partition("=")
            if name.strip().lower() == "replaces":
                replaces = unquote(v).split(";", 1)[0].strip()
    return (target, replaces) if target or replaces else None


def replaces_call_id(msg: SipMessage) -> str:
    """The Call-ID a ``Replaces`` header names ('' when there is none)."""
    value = msg.header("replaces")
    return value.split(";", 1)[0].strip() if value else ""
