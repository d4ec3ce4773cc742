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
``Replaces``) and matches no recorded call is a call first received on another number: it is not
recorded (``calls_transferred_in``; only calls received on the designated numbers are).
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
        self.pending: list[Referral] = []

    def refer(self, ts: float, call: Call, msg: SipMessage, dst: bytes, from_caller: bool) -> None:
        """A REFER in a recorded dialog. Only one the contact centre's side sent is followed."""
        if from_caller or len(self.pending) >= MAX_REFERRALS:
            return
        value = msg.header("refer-to")
        if not value:
            return
        try:
            uri = name_addr(value)[0]
            target = uri_user(uri)
        except ValueError:
            return
        replaces = ""
        _, q, headers = uri.partition("?")
        if q:
            for item in headers.split("&"):
                name, _, v = item.partition("=")
                if name.strip().lower() == "replaces":
                    replaces = unquote(v).split(";", 1)[0].strip()
        mine = [r for r in self.pending if r.call is call]
        for r in mine:
            if (r.target, r.replaces, r.referee) == (target, replaces, dst):
                r.at = ts  # a retransmission
                return
        if len(mine) >= REFERS_PER_CALL or not (target or replaces):
            return
        self.pending.append(Referral(call, ts, target, replaces, dst))

    def match(self, ts: float, src: bytes, msg: SipMessage, caller: str) -> Referral | None:
        """The REFER this new INVITE follows, if any (taken: one INVITE per REFER)."""
        if not self.pending:
            return None
        replaces = replaces_call_id(msg)
        try:
            target = uri_user(msg.request_uri)
        except ValueError:
            target = ""
        for r in self.pending:
            if ts - r.at > TRANSFER_WINDOW or ts < r.at:
                continue
            if r.replaces:
                if replaces != r.replaces:
                    continue
            elif not target or target != r.target or replaces:
                continue
            if src != r.referee and caller != r.call.caller:
                continue
            self.pending.remove(r)
            return r
        return None

    def expire(self, now: float) -> None:
        if self.pending:
            self.pending = [r for r in self.pending if now - r.at <= TRANSFER_WINDOW]


def replaces_call_id(msg: SipMessage) -> str:
    """The Call-ID a ``Replaces`` header names ('' when there is none)."""
    value = msg.header("replaces")
    return value.split(";", 1)[0].strip() if value else ""


def says_transferred(msg: SipMessage) -> bool:
    """The INVITE says it comes from a transfer (Referred-By or Replaces)."""
    return bool(msg.header("referred-by") or msg.header("replaces"))
