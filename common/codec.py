"""Temporal payload encryption, so workflow inputs and results never reach the server in clear.

Temporal stores every workflow input, activity argument and result in its history; with
``crypto.encrypt_payloads`` on, the client's payload codec encrypts each payload with AES-256-GCM
before it leaves the process. The format is the one of Temporal's encryption samples
(``encoding: binary/encrypted``, ``encryption-key-id`` metadata, ``data = nonce || ciphertext``),
so codec servers written for the Go or TypeScript samples interoperate.

The JSON helpers serve the gateway's codec endpoints that the Temporal Web UI and CLI call
(``POST /encode`` and ``/decode`` with ``{"payloads": [...]}``).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

from cryptography.exceptions import InvalidTag
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, PayloadCodec

from common.crypto import NONCE_BYTES, KeyRing
from common.errors import InvalidInput
from common.settings import CryptoSettings

__all__ = [
    "ENCODING",
    "KEY_ID_METADATA",
    "EncryptionCodec",
    "build_data_converter",
    "decode_payloads_json",
    "encode_payloads_json",
]

ENCODING = b"binary/encrypted"
"""``metadata["encoding"]`` of an encrypted payload."""

KEY_ID_METADATA = "encryption-key-id"
"""Metadata key naming the key that encrypted a payload."""

_SHAPE = 'expected {"payloads": [{"metadata": {name: base64}, "data": base64}, ...]}'


class EncryptionCodec(PayloadCodec):
    """Encrypts every payload with the active key; decrypts with whichever key encrypted it.

    Args:
        key_ring: The configured keys. Payloads encrypted under any of them decode, so histories
            written before a key rotation stay readable while the old key is still configured.
    """

    def __init__(self, key_ring: KeyRing) -> None:
        super().__init__()
        self._ring = key_ring

    @property
    def key_ring(self) -> KeyRing:
        """The keys this codec uses."""
        return self._ring

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Encrypt each payload (its whole serialized form, metadata included).

        Args:
            payloads: Payloads from the data converter; not mutated.

        Returns:
            One ``binary/encrypted`` payload per input payload.
        """
        key_id = self._ring.active_key_id
        aead = self._ring.aead(key_id)
        encoded: list[Payload] = []
        for payload in payloads:
            nonce = os.urandom(NONCE_BYTES)
            sealed = aead.encrypt(nonce, payload.SerializeToString(), None)
            encoded.append(
                Payload(
                    metadata={"encoding": ENCODING, KEY_ID_METADATA: key_id.encode("utf-8")},
                    data=nonce + sealed,
                )
            )
        return encoded

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Decrypt ``binary/encrypted`` payloads; pass every other payload through unchanged.

        Args:
            payloads: Payloads from Temporal; not mutated.

        Returns:
            The original payloads.

        Raises:
            ValueError: A payload names a key id that is not configured, or it does not
                authenticate under its key (altered, or a different key with the same id). The
                message names the key id only; Temporal reports it as a failed task.
        """
        decoded: list[Payload] = []
        for payload in payloads:
            if payload.metadata.get("encoding") != ENCODING:
                decoded.append(payload)
                continue
            key_id = payload.metadata.get(KEY_ID_METADATA, b"").decode("utf-8", "replace")
            if key_id not in self._ring:
                raise ValueError(
                    f"payload encrypted with unknown key id {key_id!r}; "
                    f"configured key ids: {list(self._ring.key_ids)}"
                )
            data = payload.data
            try:
                if len(data) <= NONCE_BYTES:
                    raise InvalidTag
                plain = self._ring.aead(key_id).decrypt(
                    data[:NONCE_BYTES], data[NONCE_BYTES:], None
                )
                decoded.append(Payload.FromString(plain))
            except (InvalidTag, DecodeError):
                raise ValueError(
                    f"payload encrypted with key id {key_id!r} could not be decrypted"
                ) from None
        return decoded

    def __repr__(self) -> str:
        return f"EncryptionCodec({self._ring!r})"


def build_data_converter(crypto: CryptoSettings) -> DataConverter:
    """The data converter every tenantflow client and worker must share.

    Args:
        crypto: The crypto settings.

    Returns:
        ``pydantic_data_converter``, with an :class:`EncryptionCodec` when
        ``crypto.encrypt_payloads`` is on.

    Raises:
        ConfigurationError: Payload encryption is on and a key is invalid.
    """
    if not crypto.encrypt_payloads:
        return pydantic_data_converter
    codec = EncryptionCodec(KeyRing.from_settings(crypto))
    return dataclasses.replace(pydantic_data_converter, payload_codec=codec)


async def encode_payloads_json(codec: PayloadCodec, body: Any) -> dict[str, Any]:
    """Run ``codec.encode`` on the JSON body of a codec-server ``/encode`` request.

    Args:
        codec: The codec, usually an :class:`EncryptionCodec`.
        body: ``{"payloads": [{"metadata": {name: base64}, "data": base64}, ...]}``.

    Returns:
        The encoded payloads in the same shape (``{"payloads": []}`` for none).

    Raises:
        InvalidInput: The body does not have that shape.
    """
    payloads = _parse_payloads(body)
    await codec.encode_wrapper(payloads)
    return _payloads_to_json(payloads)


async def decode_payloads_json(codec: PayloadCodec, body: Any) -> dict[str, Any]:
    """Run ``codec.decode`` on the JSON body of a codec-server ``/decode`` request.

    Args:
        codec: The codec, usually an :class:`EncryptionCodec`.
        body: ``{"payloads": [{"metadata": {name: base64}, "data": base64}, ...]}``.

    Returns:
        The decoded payloads in the same shape (``{"payloads": []}`` for none).

    Raises:
        InvalidInput: The body does not have that shape, or a payload cannot be decrypted (unknown
            key id or altered data); ``details.key_id`` names the key when known.
    """
    payloads = _parse_payloads(body)
    try:
        await codec.decode_wrapper(payloads)
    except ValueError as exc:
        # Our codec's messages name key ids only, never payload content, so they may be shown.
        raise InvalidInput("payloads could not be decoded", details={"cause": str(exc)}) from None
    return _payloads_to_json(payloads)


def _parse_payloads(body: Any) -> Payloads:
    if not isinstance(body, dict) or not isinstance(body.get("payloads"), list):
        raise InvalidInput(f"invalid payloads body: {_SHAPE}")
    if not all(isinstance(item, dict) for item in body["payloads"]):
        raise InvalidInput(f"invalid payloads body: every payload must be an object; {_SHAPE}")
    try:
        return json_format.ParseDict(body, Payloads())
    except (json_format.ParseError, TypeError, ValueError) as exc:
        # The parser's message can quote field values, and an /encode body holds plaintext:
        # report the exception type only.
        raise InvalidInput(
            f"invalid payloads body: {_SHAPE}", details={"cause": type(exc).__name__}
        ) from None


def _payloads_to_json(payloads: Payloads) -> dict[str, Any]:
    out = json_format.MessageToDict(payloads)
    # MessageToDict omits empty repeated fields; clients expect the key to be there.
    out.setdefault("payloads", [])
    return out
