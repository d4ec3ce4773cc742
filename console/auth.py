"""Passwords are checked by PAM (service ``recorderd-console``), never stored or logged here.

The shipped stack (/etc/pam.d/recorderd-console) uses the box's own accounts through pam_unix; a
site points it at the city's directory with pam_sss instead. pam_unix can check another user's
password only in a process that can read /etc/shadow: the console's unit gives its user the
supplementary group ``shadow`` (read-only access to the hashes, no other privilege) rather than
running as root.
"""
from __future__ import annotations

PAM_SERVICE = "recorderd-console"
MAX_NAME, MAX_PASSWORD = 64, 1024


def pam_authenticate(user: str, password: str) -> bool:
    import pam  # python-pam: a ctypes binding of libpam

    if not user or len(user) > MAX_NAME or len(password) > MAX_PASSWORD or "\0" in user + password:
        return False
    return bool(pam.pam().authenticate(user, password, service=PAM_SERVICE))
