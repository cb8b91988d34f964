"""Codec endpoints for the Temporal Web UI: it posts encrypted payloads, we return them decoded.

Point the UI at ``{gateway}/codec`` (``--ui-codec-endpoint`` on the dev server, or
``TEMPORAL_CODEC_ENDPOINT`` for ``temporalio/ui``) and allow the UI's origin in
``TENANTFLOW_GATEWAY__CORS_ORIGINS``. Decoding shows workflow inputs and results, so it needs
``monitoring:read``; encoding (the UI's "signal with input") needs ``migrations:execute``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from temporalio.converter import PayloadCodec

from common.codec import decode_payloads_json, encode_payloads_json
from common.errors import InvalidInput
from gateway.auth.deps import MigrationsExecute, MonitoringRead
from models.errors import ErrorResponse

router = APIRouter(prefix="/codec", tags=["codec"])

PayloadsBody = Annotated[
    dict[str, Any],
    Body(
        examples=[
            {"payloads": [{"metadata": {"encoding": "YmluYXJ5L2VuY3J5cHRlZA=="}, "data": "..."}]}
        ],
        description="Temporal's JSON form of Payloads: metadata values and data in base64.",
    ),
]
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "Not payloads, or encrypted with an unknown key."}
}


def _codec(request: Request) -> PayloadCodec:
    codec: PayloadCodec | None = request.app.state.payload_codec
    if codec is None:
        raise InvalidInput("payload encryption is off (TENANTFLOW_CRYPTO__ENCRYPT_PAYLOADS=false)")
    return codec


@router.post("/decode", summary="Decode payloads for the Temporal Web UI", responses=ERRORS)
async def decode(body: PayloadsBody, request: Request, principal: MonitoringRead) -> dict[str, Any]:
    """Decrypt ``binary/encrypted`` payloads; others pass through unchanged."""
    del principal
    return await decode_payloads_json(_codec(request), body)


@router.post("/encode", summary="Encode payloads for the Temporal Web UI", responses=ERRORS)
async def encode(
    body: PayloadsBody, request: Request, principal: MigrationsExecute
) -> dict[str, Any]:
    """Encrypt payloads under the active key."""
    del principal
    return await encode_payloads_json(_codec(request), body)
