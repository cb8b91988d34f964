"""Credentials at rest: AES-256-GCM with a ring of keys so that keys can be rotated.

A stored credential is a short ASCII token::

    tf1:{key_id}:{base64url(nonce || ciphertext || tag)}

``tf1`` versions the format, ``key_id`` says which configured key decrypts it (so old tokens keep
working after the active key changes), and the 96-bit nonce is random per encryption. Every token
is bound to a *context* (for example ``"database:42:password"``) through AES-GCM's associated
data: a token copied into another row or column fails to decrypt instead of leaking a credential
into the wrong place.

Nothing in this module puts plaintext, key material or tokens into exceptions, reprs or logs; key
ids are not secret and are named freely.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import re
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from common.errors import ConfigurationError, TenantflowError
from common.settings import DEV_ENCRYPTION_KEY, CryptoSettings

__all__ = [
    "KEY_BYTES",
    "NONCE_BYTES",
    "TOKEN_PREFIX",
    "CredentialCipher",
    "CredentialDecryptionError",
    "KeyRing",
    "generate_key",
    "is_dev_key",
]

KEY_BYTES = 32
"""AES-256 keys are 32 bytes."""

NONCE_BYTES = 12
"""AES-GCM's recommended 96-bit nonce; random nonces of this size are safe for ~2**32 messages."""

TOKEN_PREFIX = "tf1"  # noqa: S105 - a format tag, not a secret
"""Version tag of the token format, so a future format can coexist with this one."""

_TAG_BYTES = 16
# Same alphabet as CryptoSettings enforces; it also guarantees ids never contain the ":" separator.
_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
# Unpadded base64url is what encrypt() writes; padding is tolerated in case a caller re-encoded it.
_TOKEN = re.compile(
    rf"^{TOKEN_PREFIX}:(?P<key_id>[A-Za-z0-9_-]{{1,32}}):(?P<body>[A-Za-z0-9_-]+={{0,2}})$"
)


class CredentialDecryptionError(TenantflowError):
    """A stored credential cannot be decrypted: malformed, unknown key, wrong context or tampered.

    The message and details name at most the key id, the context and a short reason; never the
    token, the plaintext or key material.
    """

    status_code = 500
    error_type = "credential_decryption_failed"


class KeyRing:
    """The configured AES-256 keys by id, and which one encrypts new data.

    Args:
        keys: Key id -> raw key bytes (exactly 32 bytes each). Use :meth:`from_settings` to build
            a ring from the base64 strings of :class:`~common.settings.CryptoSettings`.
        active_key_id: The id of the key that encrypts new data; must be one of ``keys``.

    Raises:
        ConfigurationError: A key has the wrong length, a key id is invalid, or the active key id
            is not configured. The message names the key id, never the key.
    """

    __slots__ = ("_active_key_id", "_aeads")

    def __init__(self, keys: Mapping[str, bytes], active_key_id: str) -> None:
        if not keys:
            raise ConfigurationError("no encryption keys are configured")
        aeads: dict[str, AESGCM] = {}
        for key_id, key in keys.items():
            _check_key_id(key_id)
            if not isinstance(key, bytes | bytearray) or len(key) != KEY_BYTES:
                raise _bad_key(key_id)
            aeads[key_id] = AESGCM(bytes(key))
        if active_key_id not in aeads:
            raise ConfigurationError(
                f"active encryption key id {active_key_id!r} is not among the configured keys",
                details={"active_key_id": active_key_id, "key_ids": sorted(aeads)},
            )
        # Only AESGCM objects are kept: they never expose the key in repr or str.
        self._aeads = aeads
        self._active_key_id = active_key_id

    @classmethod
    def from_settings(cls, settings: CryptoSettings) -> KeyRing:
        """Build a ring from settings, decoding each key from base64.

        Args:
            settings: The crypto section of the settings.

        Returns:
            The key ring.

        Raises:
            ConfigurationError: A key is not base64 of exactly 32 bytes (names the key id only).
        """
        raw = {
            key_id: _decode_key(key_id, secret.get_secret_value())
            for key_id, secret in settings.keys.items()
        }
        return cls(raw, settings.active_key_id)

    @property
    def active_key_id(self) -> str:
        """The id of the key that encrypts new data."""
        return self._active_key_id

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Every configured key id, sorted."""
        return tuple(sorted(self._aeads))

    def aead(self, key_id: str) -> AESGCM:
        """The AES-GCM cipher of one key.

        Args:
            key_id: A configured key id.

        Returns:
            The cipher.

        Raises:
            KeyError: ``key_id`` is not configured.
        """
        try:
            return self._aeads[key_id]
        except KeyError:
            raise KeyError(f"unknown encryption key id {key_id!r}") from None

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._aeads

    def __repr__(self) -> str:
        return f"KeyRing(key_ids={list(self.key_ids)!r}, active_key_id={self._active_key_id!r})"


class CredentialCipher:
    """Encrypts and decrypts credentials stored in the catalog.

    Args:
        key_ring: The keys; new tokens use its active key, any configured key decrypts.
    """

    __slots__ = ("_ring",)

    def __init__(self, key_ring: KeyRing) -> None:
        self._ring = key_ring

    @property
    def key_ring(self) -> KeyRing:
        """The keys this cipher uses."""
        return self._ring

    def encrypt(self, plaintext: str, *, context: str) -> str:
        """Encrypt ``plaintext`` under the active key, bound to ``context``.

        Args:
            plaintext: The secret, e.g. a database password.
            context: Where the token will be stored, e.g. ``"database:42:password"``. The same
                context must be passed to :meth:`decrypt`.

        Returns:
            A ``tf1:{key_id}:{base64url}`` token, different on every call.

        Raises:
            ValueError: ``context`` is empty (it would bind the token to nothing).
        """
        if not context:
            raise ValueError("context must not be empty")
        key_id = self._ring.active_key_id
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ring.aead(key_id).encrypt(
            nonce, plaintext.encode("utf-8"), context.encode("utf-8")
        )
        body = base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode("ascii")
        return f"{TOKEN_PREFIX}:{key_id}:{body}"

    def decrypt(self, token: str, *, context: str) -> str:
        """Decrypt a token made by :meth:`encrypt` with the same ``context``.

        Args:
            token: The stored token.
            context: The context it was encrypted with.

        Returns:
            The plaintext.

        Raises:
            CredentialDecryptionError: The token is malformed, its key id is not configured, the
                context differs or the token was altered.
        """
        key_id, blob = _parse(token, context)
        try:
            aead = self._ring.aead(key_id)
        except KeyError:
            raise _failure("unknown_key_id", context, key_id) from None
        try:
            plain = aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], context.encode("utf-8"))
        except InvalidTag:
            # GCM cannot tell a wrong context from tampering or a wrong key; neither can we.
            raise _failure("authentication_failed", context, key_id) from None
        try:
            return plain.decode("utf-8")
        except UnicodeDecodeError:
            raise _failure("not_utf8", context, key_id) from None

    def key_id_of(self, token: str) -> str:
        """The id of the key a token was encrypted with (the token is not decrypted).

        Raises:
            CredentialDecryptionError: The token is malformed.
        """
        return _parse(token, None)[0]

    def needs_rotation(self, token: str) -> bool:
        """Whether a token is encrypted under a key other than the active one.

        Args:
            token: The stored token.

        Returns:
            True when :meth:`rotate` would re-encrypt it (including when its key id is not
            configured at all; rotating such a token then fails).

        Raises:
            CredentialDecryptionError: The token is malformed.
        """
        return self.key_id_of(token) != self._ring.active_key_id

    def rotate(self, token: str, *, context: str) -> str:
        """Re-encrypt a token under the active key.

        A token already under the active key is verified (decrypted) and returned unchanged, so a
        rotation pass also detects corrupted or misplaced tokens.

        Args:
            token: The stored token.
            context: The context it was encrypted with (kept for the new token).

        Returns:
            A token under the active key.

        Raises:
            CredentialDecryptionError: The token cannot be decrypted.
        """
        plaintext = self.decrypt(token, context=context)
        if not self.needs_rotation(token):
            return token
        return self.encrypt(plaintext, context=context)

    def __repr__(self) -> str:
        ring = self._ring
        return (
            f"CredentialCipher(key_ids={list(ring.key_ids)!r}, "
            f"active_key_id={ring.active_key_id!r})"
        )


def generate_key() -> str:
    """A new random AES-256 key as base64, ready for ``TENANTFLOW_CRYPTO__KEYS__<id>``."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode("ascii")


def is_dev_key(settings: CryptoSettings) -> bool:
    """Whether any configured key is the well-known development key.

    Args:
        settings: The crypto section of the settings.

    Returns:
        True if any key equals ``DEV_ENCRYPTION_KEY`` (compared after base64 decoding, so
        whitespace or padding variations do not hide it).
    """
    dev = base64.b64decode(DEV_ENCRYPTION_KEY)
    for secret in settings.keys.values():
        value = secret.get_secret_value().strip()
        if hmac.compare_digest(value.encode("utf-8"), DEV_ENCRYPTION_KEY.encode("ascii")):
            return True
        try:
            decoded = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            continue
        if hmac.compare_digest(decoded, dev):
            return True
    return False


def _check_key_id(key_id: object) -> None:
    if not isinstance(key_id, str) or not _KEY_ID.match(key_id):
        raise ConfigurationError(
            "encryption key ids must match [A-Za-z0-9_-]{1,32}",
            details={"key_id": str(key_id)[:64]},
        )


def _bad_key(key_id: str) -> ConfigurationError:
    return ConfigurationError(
        f"encryption key {key_id!r} must be base64 of exactly {KEY_BYTES} bytes "
        "(generate one with: tenantflow keys generate)",
        details={"key_id": key_id},
    )


def _decode_key(key_id: str, encoded: str) -> bytes:
    try:
        key = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        # ``from None``: the underlying error may quote part of the key.
        raise _bad_key(key_id) from None
    if len(key) != KEY_BYTES:
        raise _bad_key(key_id)
    return key


def _failure(reason: str, context: str | None, key_id: str | None) -> CredentialDecryptionError:
    details: dict[str, Any] = {"reason": reason}
    if key_id is not None:
        details["key_id"] = key_id
    if context is not None:
        details["context"] = context
    where = f" for {context!r}" if context else ""
    return CredentialDecryptionError(
        f"a stored credential{where} could not be decrypted ({reason.replace('_', ' ')})",
        details=details,
    )


def _parse(token: str, context: str | None) -> tuple[str, bytes]:
    """Split a token into key id and ``nonce || ciphertext || tag``; never echoes the token."""
    match = _TOKEN.match(token) if isinstance(token, str) else None
    if match is None:
        raise _failure("malformed_token", context, None)
    body = match["body"].rstrip("=")
    try:
        blob = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise _failure("malformed_token", context, None) from None
    if len(blob) < NONCE_BYTES + _TAG_BYTES:
        raise _failure("malformed_token", context, match["key_id"])
    return match["key_id"], blob
