"""The JWKS cache (``gateway.auth.jwks``) on a published key set with entries it must skip:
encryption keys, keys without an id and keys that do not parse. The provider is a fake
(``httpx.MockTransport``); the usable key is a real RSA key."""

from __future__ import annotations

import json
import logging

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from gateway.auth.jwks import JwksCache, UnknownSigningKey

URL = "https://sso.example.com/realms/tenantflow/protocol/openid-connect/certs"


def _public_jwk(kid: str, **extra: str) -> dict[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    jwk: dict[str, str] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key))
    return {**jwk, "kid": kid, **extra}


async def test_only_usable_signing_keys_with_an_id_are_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.auth.jwks")
    published = {
        "keys": [
            _public_jwk("signing", use="sig", alg="RS256"),
            _public_jwk("encryption", use="enc"),
            {key: value for key, value in _public_jwk("x").items() if key != "kid"},
            {"kid": "broken", "kty": "XYZ"},
        ]
    }

    async def answer(request: httpx.Request) -> httpx.Response:
        assert str(request.url) == URL
        return httpx.Response(200, json=published)

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        cache = JwksCache(URL, max_age=300, min_refresh_interval=60, http=http)
        key = await cache.get("signing")
        assert isinstance(key.key, rsa.RSAPublicKey)
        for skipped in ("encryption", "broken"):
            with pytest.raises(UnknownSigningKey):
                await cache.get(skipped)
    assert [vars(r).get("kid") for r in caplog.records if "unusable JWK" in r.getMessage()] == [
        "broken"
    ]
