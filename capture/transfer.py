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

Never by the caller's number alone, and never by the address alone: the new INVITE's From user must
be the recorded call's caller *and* it must come from the address the REFER went to (or carry the
Replaces). The referee is the carrier trunk or the SBC, from which every inbound INVITE comes: a
second caller's INVITE to the same extension just after the REFER is not the transfer (its From
differs), and the new call keeps its own caller. A REFER sent by the caller's side (the caller
transfers the operator away) leaves the caller's conversation: it is not followed.

Only a transfer inside the contact centre is followed: a Refer-To whose user is not a complete
number (an extension, a SIP user) or is a designated number. A transfer to a complete number that is
not designated (another agency, a mobile) is not followed: the city records its own staff's calls,
not a citizen's conversation with a third party (``calls_transfer_not_followed``, once per REFER).

A new INVITE to a designated number that says it comes from a transfer (``Referred-By`` or
``Replaces``) and matches no recorded call is a call first received on another number when it
follows a transfer of a call seen *and ignored as not designated*: a REFER in that dialog (its
INVITE seen, the REFER between that dialog's addresses) with this target or Replaces, or a Replaces
naming that dialog, and the same caller. It is not recorded (``calls_transferred_in``; only calls
received on the designated numbers are). A header alone is not enough, nor is a REFER in a dialog
never seen (anyone can send one): a call transferred to a designated number on another system (a
REFER the mirror never showed) arrives on the designated number and is recorded.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote

from .dids import complete_number
from .sip import SipMessage, name_addr, uri_user_context

if TYPE_CHECKING:
    from .call import Call

TRANSFER_WINDOW = 32.0  # s after the REFER within which the caller's new INVITE comes
REFERS_PER_CALL = 4  # REFERs followed per recorded call (retransmissions are one)
MAX_REFERRALS = 1000  # referrals pending at most (a REFER flood stays bounded)
OUTSIDE_DIALOGS = 20_000  # dialogs ignored as not designated remembered at most (oldest forgotten first)
OUTSIDE_HORIZON = 4 * 3600.0  # s such a dialog is remembered without a BYE (a REFER may come late in a long call)


@dataclass
class Referral:
    call: Call  # the recorded call whose dialog carried the REFER
    at: float
    target: str  # the Refer-To's user
    replaces: str  # the Call-ID its Replaces names, or ""
    referee: bytes  # the address the REFER went to: the caller's side, which sends the new INVITE


class Transfers:
    def __init__(self, inside: Callable[[str, str], bool] = lambda user, context: True) -> None:
        self.inside = inside  # (Refer-To user, phone-context) -> a target inside the contact centre
        self.pending: dict[str, list[Referral]] = {}  # "t:" + target or "r:" + Replaces Call-ID -> REFERs
        self.count = 0
        self.not_followed: dict[tuple[str, str], float] = {}  # (Call-ID, key) -> when: counted once per REFER
        # dialogs whose INVITE was ignored as not designated: Call-ID -> (when, its src, its dst, its caller)
        self.outside: dict[str, tuple[float, bytes, bytes, str]] = {}
        self.elsewhere: dict[str, tuple[float, bytes, str]] = {}  # the keys, REFERs of those: (when, referee, caller)

    def refer(self, ts: float, call: Call, msg: SipMessage, dst: bytes, from_caller: bool,
              counters: dict[str, int] | None = None) -> None:
        """A REFER in a recorded dialog. Only one the contact centre's side sent, to a target inside
        the contact centre, is followed; one to an outside number is counted in
        ``calls_transfer_not_followed`` (``counters``) once."""
        if from_caller or self.count >= MAX_REFERRALS:
            return
        parsed = refer_target(msg)
        if parsed is None:
            return
        target, replaces, context = parsed
        key = "r:" + replaces if replaces else "t:" + target_key(target, context)
        if not self.inside(target, context):
            if (call.call_id, key) not in self.not_followed and len(self.not_followed) < MAX_REFERRALS:
                self.not_followed[(call.call_id, key)] = ts
                if counters is not None:
                    counters["calls_transfer_not_followed"] += 1
            return
        referrals = self.pending.setdefault(key, [])
        for r in referrals:
            if r.call is call and r.referee == dst:
                r.at = ts  # a retransmission
                return
        if sum(1 for rs in self.pending.values() for r in rs if r.call is call) >= REFERS_PER_CALL:
            return
        referrals.append(Referral(call, ts, target, replaces, dst))
        self.count += 1

    def ignored_outside(self, ts: float, call_id: str, src: bytes, dst: bytes, caller: str) -> None:
        """An INVITE ignored as not designated: a REFER in its dialog may transfer its caller to a
        designated number."""
        self.outside.pop(call_id, None)  # re-insert: the dict stays ordered by time
        self.outside[call_id] = (ts, src, dst, caller)
        if len(self.outside) > OUTSIDE_DIALOGS:
            del self.outside[next(iter(self.outside))]

    def outside_ended(self, call_id: str) -> None:
        self.outside.pop(call_id, None)

    def refer_not_recorded(self, ts: float, msg: SipMessage, src: bytes, dst: bytes) -> None:
        """A REFER in a dialog that is not recorded. Only a dialog seen and ignored as not designated,
        the REFER between its own addresses, counts: the INVITE that follows, from the same caller,
        is a call transferred in. A REFER of a dialog never seen is anyone's: it changes nothing."""
        dialog = self.outside.get(msg.call_id)
        if dialog is None or src not in dialog[1:3] or dst not in dialog[1:3]:
            return
        parsed = refer_target(msg)
        if parsed is None or len(self.elsewhere) >= MAX_REFERRALS:
            return
        target, replaces, context = parsed
        self.elsewhere["r:" + replaces if replaces else "t:" + target_key(target, context)] = (ts, dst, dialog[3])

    def _key(self, msg: SipMessage) -> str:
        replaces = replaces_call_id(msg)
        if replaces:
            return "r:" + replaces
        try:
            return "t:" + target_key(*uri_user_context(msg.request_uri))
        except ValueError:
            return "t:"

    def match(self, ts: float, src: bytes, msg: SipMessage, caller: str) -> Referral | None:
        """The REFER this new INVITE follows, if any (taken: one INVITE per REFER): the same caller,
        and from the address the REFER went to or with the Replaces it named."""
        if not self.pending:
            return None
        key = self._key(msg)
        for r in self.pending.get(key, ()):
            if (0.0 <= ts - r.at <= TRANSFER_WINDOW and caller == r.call.caller
                    and (src == r.referee or key.startswith("r:"))):
                self.pending[key].remove(r)
                self.count -= 1
                if not self.pending[key]:
                    del self.pending[key]
                return r
        return None

    def transferred_in(self, ts: float, src: bytes, msg: SipMessage, caller: str) -> bool:
        """The INVITE follows a REFER seen in a dialog ignored as not designated, or its Replaces
        names such a dialog: the same caller either way."""
        replaced = replaces_call_id(msg)
        dialog = self.outside.get(replaced) if replaced else None
        if dialog is not None and dialog[3] == caller:
            return True
        seen = self.elsewhere.get(self._key(msg)) if self.elsewhere else None
        return (seen is not None and 0.0 <= ts - seen[0] <= TRANSFER_WINDOW and src == seen[1]
                and caller == seen[2])

    def expire(self, now: float) -> None:
        for key, referrals in list(self.pending.items()):
            kept = [r for r in referrals if now - r.at <= TRANSFER_WINDOW]
            self.count -= len(referrals) - len(kept)
            if kept:
                self.pending[key] = kept
            else:
                del self.pending[key]
        for key, (at, _src, _caller) in list(self.elsewhere.items()):
            if now - at > TRANSFER_WINDOW:
                del self.elsewhere[key]
        for refer, at in list(self.not_followed.items()):
            if now - at > TRANSFER_WINDOW:
                del self.not_followed[refer]
        while self.outside:
            call_id, (at, _src, _dst, _caller) = next(iter(self.outside.items()))
            if now - at <= OUTSIDE_HORIZON:
                break
            del self.outside[call_id]


def refer_target(msg: SipMessage) -> tuple[str, str, str] | None:
    """(the Refer-To's user, the Call-ID its ?Replaces= names or '', the user's phone-context or '')
    of a REFER; None when unusable."""
    value = msg.header("refer-to")
    if not value:
        return None
    try:
        uri = name_addr(value)[0]
        target, context = uri_user_context(uri.partition("?")[0])
    except ValueError:
        return None
    replaces = ""
    _, q, headers = uri.partition("?")
    if q:
        for item in headers.split("&"):
            name, _, v = item.partition("=")
            if name.strip().lower() == "replaces":
                replaces = unquote(v).split(";", 1)[0].strip()
    return (target, replaces, context) if target or replaces else None


def target_key(user: str, context: str = "") -> str:
    """A transfer target as compared: a complete number in its E.164 form (the Refer-To may write
    +81442002111 and the new INVITE 0442002111), anything else as written."""
    return complete_number(user, context) or user


def replaces_call_id(msg: SipMessage) -> str:
    """The Call-ID a ``Replaces`` header names ('' when there is none)."""
    value = msg.header("replaces")
    return value.split(";", 1)[0].strip() if value else ""
