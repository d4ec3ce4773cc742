"""Keys derived from the master key, one per purpose (HKDF-SHA256, RFC 5869).

The master key itself only wraps the recordings' data keys (``storage/vault.py``). Everything else
that needs a secret only the service holds gets its own key derived from it, so that no two uses
share a key and a key of one purpose tells nothing about another's:

- ``audit-seal``: the HMAC key that binds each audit row into the chain (``storage/audit.py``);
- ``caller-digest``: the HMAC key of the keyed digests that let a caller number be searched without
  being kept in the clear (``storage/index.py``).

Destroying the master key (``decommission``) destroys them all.
"""
from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PURPOSES = frozenset({"audit-seal", "caller-digest"})
_SALT = b"recorderd derived keys v1"


def derive(master: bytes, purpose: str) -> bytes:
    """The 32-byte key for ``purpose`` (one of :data:`PURPOSES`)."""
    if purpose not in PURPOSES:
        raise ValueError(f"no derived key for {purpose!r}")
    if len(master) != 32:
        raise ValueError("the master key must be 32 bytes")
    info = f"recorderd {purpose} v1".encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=info).derive(master)
