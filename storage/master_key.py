"""The store's master key: made at init (unless a systemd credential provides it), loaded once, and
checked against the check value the index keeps, so that a wrong or replaced key is refused before it
wraps a single data key. Without its own key a store that holds recordings opens none of them: the
refusals say to restore the key from its backup, never to run init."""
from __future__ import annotations

import logging
import os
import sqlite3

from . import signing, vault
from .erasure import erase_file
from .errors import StoreError
from .index import Index

log = logging.getLogger(__name__)

KEY_CHECK = "master_key_check"  # store_meta: vault.key_check of the store's master key


class MasterKey:
    """The master key of the store at ``root``: from ``key_file``, or the systemd credential
    ``master-key`` in ``credentials_dir`` when it is there."""

    def __init__(self, root: str, key_file: str, credentials_dir: str | None = None) -> None:
        self.root = root
        self.key_file = key_file
        self.credentials_dir = credentials_dir
        self._key: bytes | None = None

    def forget(self) -> None:
        """Loaded again at the next :meth:`get` (as a process that has not loaded it yet)."""
        self._key = None

    def credential_present(self) -> bool:
        return bool(self.credentials_dir) and os.path.exists(os.path.join(self.credentials_dir, vault.CREDENTIAL))  # type: ignore[arg-type]

    def restore_advice(self, what: str, wrapped: int) -> str:
        return (f"{what}: the store at {self.root} holds {wrapped} recording(s) whose keys only the store's own "
                f"master key opens; restore that key from its backup to {self.key_file} (mode 0400, owned by the "
                "service user) or load it as the systemd credential master-key, then start again")

    def create(self, index: Index) -> bool:
        """At init: the key file made unless a credential provides the key or the file is there
        (True when it was made now). Never for a store whose recordings hold keys wrapped by another
        one: that is refused, saying to restore the key."""
        made = False
        if not self.credential_present():
            wrapped = index.wrapped_keys()
            if wrapped and not os.path.exists(self.key_file):
                raise StoreError(self.restore_advice(f"the master key file {self.key_file} is missing", wrapped)
                                 + "; init does not make a new key for a store that holds recordings")
            made = vault.create_key_file(self.key_file)
        if made:  # a store without wrapped keys: its old check value (if any) is for a key gone
            index.delete_meta(KEY_CHECK)
            self._drop_signing_key()  # wrapped by the key gone: it can sign nothing (init makes a new one)
        self._key = None
        return made

    def _drop_signing_key(self) -> None:
        path = signing.key_path(self.root)
        if not os.path.lexists(path):
            return
        erase_file(path)
        log.warning("the signing key was wrapped by the master key that is gone: erased, and a new one is made; "
                    "copies signed before still check with the old public key (recorderctl verify-export --pubkey)",
                    extra={"EVENT": "signing-key-replaced"})

    def get(self, index: Index | None = None) -> bytes:
        """The master key, checked against the store's key check value (recorded at init; a store
        made before there was one gets it from the first key that opens one of its recordings)."""
        if self._key is None:
            try:
                key = vault.load_master_key(self.key_file, self.credentials_dir)
            except vault.MissingKey as exc:
                wrapped = index.wrapped_keys() if index is not None else 0
                if wrapped:
                    raise StoreError(self.restore_advice(str(exc), wrapped) + "; do not run init") from None
                raise StoreError(f"{exc}: run 'recorderctl --config PATH init'") from None
            except OSError as exc:
                raise StoreError(f"cannot read the master key {self.key_file}: {exc.strerror}") from None
            except vault.VaultError as exc:
                raise StoreError(str(exc)) from None
            if index is not None:
                self._check(key, index)
            self._key = key
        return self._key

    def _check(self, key: bytes, index: Index) -> None:
        check = vault.key_check(key)
        source = (f"the systemd credential {vault.CREDENTIAL}" if self.credential_present() else f"the key file {self.key_file}")
        stored = index.meta(KEY_CHECK)
        if stored is not None:
            if not vault.same_check(stored, check):
                raise StoreError(self.restore_advice(f"the master key in {source} is not this store's (its check "
                                                     "value differs from the one recorded when the store was made)",
                                                     index.wrapped_keys()) + "; do not run init")
            return
        sample = index.wrapped_key_sample()
        if sample is not None:
            try:
                vault.unwrap(key, sample[1], sample[0])
            except vault.VaultError:
                raise StoreError(self.restore_advice(f"the master key in {source} does not open recording {sample[0]}",
                                                     index.wrapped_keys()) + "; do not run init") from None
        try:
            index.set_meta(KEY_CHECK, check)
        except sqlite3.Error as exc:  # a full or read-only disk: checked by a recording's key until then
            log.warning("the master key's check value could not be recorded (%s): it is recorded at the next start", exc)
        else:
            if sample is not None:
                log.info("the master key opens the store's recordings: its check value is recorded now",
                         extra={"EVENT": "key-check-recorded"})
