"""Keyed pseudonymisation of user ids (HMAC-SHA256), applied before anything is stored.

The same key always maps an id to the same pseudonym, so a pseudonymised store still
links a user's events across files; without the key the mapping cannot be reversed or
recomputed. The store keeps only a fingerprint of the key, to refuse a different one.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from ebbtide.errors import PrivacyError

#: Environment variable read for the key when no key file is given.
KEY_ENV = "EBBTIDE_PSEUDONYM_KEY"
_FINGERPRINT_MESSAGE = b"ebbtide key fingerprint v1"
_MIN_KEY_BYTES = 16


class Pseudonymiser:
    """Map raw user ids to stable, keyed pseudonyms.

    Parameters
    ----------
    key : bytes
        Secret key, at least 16 bytes. Keep it outside the store.

    Examples
    --------
    >>> p = Pseudonymiser(b"0123456789abcdef")
    >>> p("user-1") == p("user-1") != p("user-2")
    True
    """

    def __init__(self, key: bytes) -> None:
        if len(key) < _MIN_KEY_BYTES:
            raise PrivacyError(
                f"the pseudonymisation key has {len(key)} bytes; use at least {_MIN_KEY_BYTES}"
                " (e.g. `openssl rand -hex 32 > key.txt`)"
            )
        self._key = key

    @classmethod
    def from_env_or_file(cls, key_file: Path | None = None) -> Pseudonymiser:
        """Load the key from `key_file`, else from the `EBBTIDE_PSEUDONYM_KEY` variable."""
        if key_file is not None:
            try:
                key = key_file.read_bytes().strip()
            except OSError as exc:
                raise PrivacyError(f"cannot read the key file {key_file}: {exc.strerror}") from None
            return cls(key)
        value = os.environ.get(KEY_ENV)
        if not value:
            raise PrivacyError(
                f"pseudonymisation needs a key: set {KEY_ENV} or pass --key-file FILE"
            )
        return cls(value.encode())

    def __call__(self, user_id: str) -> str:
        return hmac.new(self._key, user_id.encode(), hashlib.sha256).hexdigest()

    def many(self, user_ids: list[str]) -> list[str]:
        """Pseudonymise distinct ids (one call per distinct user, not per event)."""
        key = self._key
        return [hmac.new(key, u.encode(), hashlib.sha256).hexdigest() for u in user_ids]

    @property
    def fingerprint(self) -> str:
        """A value that identifies the key without revealing it."""
        return hmac.new(self._key, _FINGERPRINT_MESSAGE, hashlib.sha256).hexdigest()[:16]

    def __repr__(self) -> str:
        return f"Pseudonymiser(fingerprint={self.fingerprint!r})"
