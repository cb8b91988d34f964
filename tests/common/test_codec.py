"""Temporal payload encryption: the codec alone, its JSON helpers, and a real server's history.

The workflow sandbox re-imports this module to run ``EchoWorkflow``, so module level holds
definitions only; imports that are not workflow code are passed through the sandbox.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    import pytest
    from google.protobuf.message import Message
    from pydantic import SecretStr
    from temporalio.api.common.v1 import Payload
    from temporalio.client import Client, WorkflowHistory
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.converter import DataConverter
    from temporalio.worker import Worker

    from cli.temporal_server import TemporalDevServer
    from common.codec import (
        ENCODING,
        EncryptionCodec,
        build_data_converter,
        decode_payloads_json,
        encode_payloads_json,
    )
    from common.crypto import KeyRing, generate_key
    from common.errors import InvalidInput
    from common.settings import CryptoSettings

SECRET = "s3cr3t-in-payload"
KEY_1 = bytes(range(32))
KEY_2 = bytes(range(100, 132))


@dataclass
class EchoInput:
    """What the test workflow receives."""

    tenant: str
    secret: str


@dataclass
class EchoResult:
    """What the test workflow returns: the input as the activity saw it."""

    tenant: str
    secret: str
    length: int


@activity.defn(name="codec_test_echo")
async def echo(params: EchoInput) -> EchoResult:
    """Return the input, proving the activity received it decrypted."""
    return EchoResult(tenant=params.tenant, secret=params.secret, length=len(params.secret))


@workflow.defn(name="CodecTestWorkflow")
class EchoWorkflow:
    """Passes its input through one activity, so inputs and results cross Temporal twice."""

    @workflow.run
    async def run(self, params: EchoInput) -> EchoResult:
        """Echo ``params`` through the activity."""
        return await workflow.execute_activity(
            echo, params, start_to_close_timeout=timedelta(seconds=10)
        )


def _payload(text: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=f'"{text}"'.encode())


def _codec(active: str, **keys: bytes) -> EncryptionCodec:
    return EncryptionCodec(KeyRing(keys, active))


# -- the codec alone ------------------------------------------------------------------------------


async def test_encode_decode_round_trip() -> None:
    codec = _codec("k1", k1=KEY_1)
    originals = [_payload(SECRET), _payload("other"), Payload()]
    encoded = await codec.encode(originals)
    assert len(encoded) == len(originals)
    for enc in encoded:
        assert enc.metadata["encoding"] == ENCODING == b"binary/encrypted"
        assert enc.metadata["encryption-key-id"] == b"k1"
        assert SECRET.encode() not in enc.data
        assert b"json/plain" not in enc.data
    assert await codec.decode(encoded) == originals
    # A fresh nonce each time: the same payload never encrypts to the same bytes.
    again = await codec.encode(originals)
    assert [p.data for p in again] != [p.data for p in encoded]


async def test_decode_passes_unencrypted_payloads_through() -> None:
    codec = _codec("k1", k1=KEY_1)
    plain = [_payload("clear"), Payload(metadata={"encoding": b"binary/null"})]
    assert await codec.decode(plain) == plain
    mixed = [(await codec.encode([_payload("x")]))[0], plain[0]]
    assert await codec.decode(mixed) == [_payload("x"), plain[0]]


async def test_decode_with_a_rotated_key_ring() -> None:
    old = _codec("k1", k1=KEY_1)
    encoded_old = await old.encode([_payload(SECRET)])
    rotated = _codec("k2", k1=KEY_1, k2=KEY_2)
    assert await rotated.decode(encoded_old) == [_payload(SECRET)]
    encoded_new = await rotated.encode([_payload(SECRET)])
    assert encoded_new[0].metadata["encryption-key-id"] == b"k2"
    assert await rotated.decode(encoded_new + encoded_old) == [_payload(SECRET)] * 2


async def test_decode_with_unknown_key_id_names_it() -> None:
    encoded = await _codec("k1", k1=KEY_1).encode([_payload(SECRET)])
    with pytest.raises(ValueError, match="unknown key id 'k1'") as info:
        await _codec("k2", k2=KEY_2).decode(encoded)
    assert SECRET not in str(info.value)


async def test_decode_of_tampered_or_wrong_key_payload_fails() -> None:
    encoded = (await _codec("k1", k1=KEY_1).encode([_payload(SECRET)]))[0]
    with pytest.raises(ValueError, match="key id 'k1' could not be decrypted"):
        await _codec("k1", k1=KEY_2).decode([encoded])
    tampered = Payload()
    tampered.CopyFrom(encoded)
    tampered.data = encoded.data[:-1] + bytes([encoded.data[-1] ^ 1])
    with pytest.raises(ValueError, match="could not be decrypted"):
        await _codec("k1", k1=KEY_1).decode([tampered])
    truncated = Payload(metadata=dict(encoded.metadata), data=b"short")
    with pytest.raises(ValueError, match="could not be decrypted"):
        await _codec("k1", k1=KEY_1).decode([truncated])


def test_build_data_converter() -> None:
    assert build_data_converter(CryptoSettings()) is pydantic_data_converter
    converter = build_data_converter(CryptoSettings(encrypt_payloads=True))
    assert isinstance(converter.payload_codec, EncryptionCodec)
    assert converter.payload_converter_class is pydantic_data_converter.payload_converter_class
    assert converter.payload_codec.key_ring.active_key_id == "dev"
    assert "dev" in repr(converter.payload_codec)


# -- JSON helpers for the codec endpoints ---------------------------------------------------------


async def test_json_helpers_round_trip() -> None:
    codec = _codec("k1", k1=KEY_1)
    body = {
        "payloads": [
            {"metadata": {"encoding": "anNvbi9wbGFpbg=="}, "data": "InMzY3IzdC1pbi1wYXlsb2FkIg=="},
            {"metadata": {"encoding": "YmluYXJ5L251bGw="}},
        ]
    }
    encoded = await encode_payloads_json(codec, body)
    assert len(encoded["payloads"]) == 2
    for item in encoded["payloads"]:
        assert set(item["metadata"]) == {"encoding", "encryption-key-id"}
        assert item["metadata"]["encoding"] == "YmluYXJ5L2VuY3J5cHRlZA=="  # binary/encrypted
    assert await decode_payloads_json(codec, encoded) == body
    # Unencrypted payloads come back from /decode as they were sent.
    assert await decode_payloads_json(codec, body) == body
    assert await encode_payloads_json(codec, {"payloads": []}) == {"payloads": []}
    assert await decode_payloads_json(codec, {"payloads": []}) == {"payloads": []}


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        "payloads",
        {},
        {"payloads": None},
        {"payloads": {"data": "AA=="}},
        {"payloads": ["AA=="]},
        {"payloads": [{"data": "not base64!"}]},
        {"payloads": [{"metadata": {"encoding": 5}}]},
        {"payloads": [{"metadata": "x"}]},
        {"payloads": [{"unknown": "AA=="}]},
        {"payloads": [], "extra": 1},
    ],
)
async def test_json_helpers_reject_junk(body: object) -> None:
    codec = _codec("k1", k1=KEY_1)
    with pytest.raises(InvalidInput) as enc:
        await encode_payloads_json(codec, body)
    with pytest.raises(InvalidInput) as dec:
        await decode_payloads_json(codec, body)
    for err in (enc.value, dec.value):
        assert err.status_code == 400
        assert "not base64!" not in f"{err} {err.details}"


async def test_decode_json_with_unknown_key_is_invalid_input() -> None:
    encoded = await encode_payloads_json(
        _codec("k1", k1=KEY_1), {"payloads": [{"data": "InMzY3IzdCI="}]}
    )
    with pytest.raises(InvalidInput) as info:
        await decode_payloads_json(_codec("k2", k2=KEY_2), encoded)
    assert "'k1'" in info.value.details["cause"]


# -- a real Temporal server -----------------------------------------------------------------------


def _payloads_in(message: Message) -> Iterator[Payload]:
    """Every Payload nested anywhere in a protobuf message."""
    if isinstance(message, Payload):
        yield message
        return
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            values = [v for v in value.values() if isinstance(v, Message)]
        elif field.is_repeated:
            values = list(value)
        else:
            values = [value]
        for item in values:
            yield from _payloads_in(item)


def _io_payloads(history: WorkflowHistory) -> list[Payload]:
    """The input and result payloads of the workflow and its activity."""
    found: list[Payload] = []
    for event in history.events:
        if event.HasField("workflow_execution_started_event_attributes"):
            found += event.workflow_execution_started_event_attributes.input.payloads
        elif event.HasField("activity_task_scheduled_event_attributes"):
            found += event.activity_task_scheduled_event_attributes.input.payloads
        elif event.HasField("activity_task_completed_event_attributes"):
            found += event.activity_task_completed_event_attributes.result.payloads
        elif event.HasField("workflow_execution_completed_event_attributes"):
            found += event.workflow_execution_completed_event_attributes.result.payloads
    return found


async def _run_echo(address: str, converter: DataConverter) -> WorkflowHistory:
    """Run EchoWorkflow with ``converter`` and return its history as a codec-less client sees it."""
    client = await Client.connect(address, data_converter=converter)
    task_queue = f"codec-test-{uuid.uuid4().hex}"
    params = EchoInput(tenant="acme", secret=SECRET)
    async with Worker(client, task_queue=task_queue, workflows=[EchoWorkflow], activities=[echo]):
        handle = await client.start_workflow(
            EchoWorkflow.run,
            params,
            id=f"codec-test-{uuid.uuid4().hex}",
            task_queue=task_queue,
            execution_timeout=timedelta(seconds=60),
        )
        result = await handle.result()
    assert result == EchoResult(tenant="acme", secret=SECRET, length=len(SECRET))
    raw_client = await Client.connect(address)
    return await raw_client.get_workflow_handle(handle.id).fetch_history()


async def test_payloads_are_encrypted_in_temporal_history(
    temporal_server: TemporalDevServer,
) -> None:
    converter = build_data_converter(CryptoSettings(encrypt_payloads=True))
    history = await _run_echo(temporal_server.address, converter)

    io = _io_payloads(history)
    assert len(io) == 4  # workflow input, activity input, activity result, workflow result
    for payload in io:
        assert payload.metadata["encoding"] == b"binary/encrypted"
        assert payload.metadata["encryption-key-id"] == b"dev"
    exported = history.to_json()
    assert SECRET not in exported
    assert SECRET.encode() not in exported.encode()
    everything = list(_payloads_in_history(history))
    assert everything
    for payload in everything:
        assert SECRET.encode() not in payload.data
        assert b"acme" not in payload.data
    # With the codec the same history decodes back to the input.
    assert converter.payload_codec is not None
    decoded = await converter.payload_codec.decode(io[:1])
    assert SECRET.encode() in decoded[0].data


async def test_history_decodes_after_key_rotation(temporal_server: TemporalDevServer) -> None:
    old_key = generate_key()
    before = CryptoSettings(
        keys={"old": SecretStr(old_key)}, active_key_id="old", encrypt_payloads=True
    )
    history = await _run_echo(temporal_server.address, build_data_converter(before))
    after = build_data_converter(
        CryptoSettings(
            keys={"old": SecretStr(old_key), "new": SecretStr(generate_key())},
            active_key_id="new",
            encrypt_payloads=True,
        )
    )
    assert after.payload_codec is not None
    decoded = await after.payload_codec.decode(_io_payloads(history))
    assert all(p.metadata["encoding"] == b"json/plain" for p in decoded)
    assert any(SECRET.encode() in p.data for p in decoded)


async def test_without_encryption_the_secret_is_visible(
    temporal_server: TemporalDevServer,
) -> None:
    # The control for the test above: the same checks do find the secret when nothing encrypts.
    history = await _run_echo(temporal_server.address, build_data_converter(CryptoSettings()))
    io = _io_payloads(history)
    assert len(io) == 4
    assert all(p.metadata["encoding"] == b"json/plain" for p in io)
    assert any(SECRET.encode() in p.data for p in _payloads_in_history(history))


def _payloads_in_history(history: WorkflowHistory) -> Iterator[Payload]:
    for event in history.events:
        yield from _payloads_in(event)
