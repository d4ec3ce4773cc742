"""The console's sessions and sign-in lockout (issue 12): idle and absolute timeouts end a session
on the server, sign-out forgets it, a locked name is refused before any password is checked, and
the CSRF token compares in constant time and fails on anything but the session's own."""
from __future__ import annotations

from console import i18n
from console.sessions import Lockout, Sessions


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_ends_after_the_idle_time_and_says_it_expired() -> None:
    clock = Clock()
    sessions = Sessions(idle=15 * 60, absolute=8 * 3600, clock=clock)
    s = sessions.create("alice", ("staff",), "192.0.2.7")
    clock.now += 14 * 60
    assert sessions.get(s.id) == (s, False)  # used: the idle time starts again
    clock.now += 14 * 60
    assert sessions.get(s.id) == (s, False)
    clock.now += 15 * 60 + 1
    assert sessions.get(s.id) == (None, True)
    assert sessions.get(s.id) == (None, False)  # gone on the server, not only in the browser


def test_a_session_in_use_still_ends_at_the_absolute_limit() -> None:
    clock = Clock()
    sessions = Sessions(idle=15 * 60, absolute=8 * 3600, clock=clock)
    s = sessions.create("alice", ("staff",), "192.0.2.7")
    for _ in range(8 * 6 + 1):
        clock.now += 10 * 60
        found, _ = sessions.get(s.id)
        if found is None:
            break
    assert clock.now - 1000.0 <= 8 * 3600 + 600
    assert sessions.get(s.id)[0] is None


def test_sign_out_forgets_the_session_and_ids_are_not_guessable() -> None:
    sessions = Sessions(idle=900, absolute=28800)
    a, b = sessions.create("alice", ("staff",), "::1"), sessions.create("alice", ("staff",), "::1")
    assert a.id != b.id and len(a.id) >= 40 and a.csrf != b.csrf
    assert sessions.end(a.id) is a
    assert sessions.get(a.id) == (None, False)
    assert sessions.get(b.id)[0] is b
    assert sessions.get("x" * 500) == (None, False)


def test_csrf_token_is_the_sessions_own() -> None:
    s = Sessions(idle=900, absolute=28800).create("bob", ("manager",), "::1")
    assert s.csrf_ok(s.csrf)
    assert not s.csrf_ok(None) and not s.csrf_ok("") and not s.csrf_ok(s.csrf[:-1] + "x")


def test_lockout_per_user_and_per_address_for_its_window() -> None:
    clock = Clock()
    lock = Lockout(failures=3, window=15 * 60, clock=clock)
    for _ in range(3):
        assert not lock.locked("user:alice", "ip:192.0.2.7")
        lock.failed("user:alice", "ip:192.0.2.7")
    assert lock.locked("user:alice", "ip:198.51.100.1")  # the name, from another address
    assert lock.locked("user:bob", "ip:192.0.2.7")  # the address, for another name
    assert not lock.locked("user:bob", "ip:198.51.100.1")
    clock.now += 15 * 60 + 1
    assert not lock.locked("user:alice", "ip:192.0.2.7")


def test_every_message_is_in_both_languages() -> None:
    assert i18n.t("signin.title", "ja") == "サインイン" and i18n.t("signin.title", "en") == "Sign in"
    assert i18n.lang_of(None) == "ja" and i18n.lang_of("en") == "en" and i18n.lang_of("fr") == "ja"
    for key, (ja, en) in i18n.MESSAGES.items():
        assert ja and en, key


def test_one_persons_sign_ins_never_sign_another_person_out() -> None:
    """Hostile review: with MAX_SESSIONS reached the oldest session of anyone was dropped, so one
    signed-in person signing in 1000 times signed everyone else out. Now a person has at most
    ``PER_USER`` sessions (their own oldest goes), and nobody else's is touched."""
    from console.sessions import MAX_SESSIONS, PER_USER

    clock = Clock()
    sessions = Sessions(idle=15 * 60, absolute=8 * 3600, clock=clock)
    alice = sessions.create("alice", ("manager",), "192.0.2.7")
    bobs = []
    for _ in range(MAX_SESSIONS):
        clock.now += 0.5
        bobs.append(sessions.create("bob", ("staff",), "198.51.100.1"))
    assert sessions.get(alice.id) == (alice, False)
    live = [b for b in bobs if sessions.get(b.id)[0] is not None]
    assert live == bobs[-PER_USER:]  # bob keeps his newest ten
    assert sessions.get(sessions.create("BOB", ("staff",), "198.51.100.1").id)[0] is not None  # the same name
    assert sessions.get(bobs[-PER_USER].id)[0] is None


def test_a_full_session_table_refuses_the_new_sign_in_and_drops_nobody() -> None:
    import pytest

    from console.sessions import MAX_SESSIONS, SessionsFull

    clock = Clock()
    sessions = Sessions(idle=15 * 60, absolute=8 * 3600, clock=clock)
    everyone = [sessions.create(f"user{i}", ("staff",), "192.0.2.7") for i in range(MAX_SESSIONS)]
    with pytest.raises(SessionsFull):
        sessions.create("newcomer", ("staff",), "198.51.100.1")
    assert all(sessions.get(s.id)[0] is s for s in everyone)
    clock.now += 15 * 60 + 1  # once sessions have expired there is room again
    assert sessions.get(sessions.create("newcomer", ("staff",), "198.51.100.1").id)[0] is not None
