"""The validator remembers a verified token for a minute at most, never past its expiry."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import pytest

from cli.dev_issuer import DevIssuer
from common.settings import AuthSettings
from gateway.auth.tokens import VERIFIED_TTL_SECONDS, InvalidToken, TokenValidator


class Keys:
    """Stands in for the JWKS cache: the issuer's keys, counting lookups."""

    def __init__(self, issuer: DevIssuer) -> None:
        self.issuer = issuer
        self.lookups = 0

    async def get(self, kid: str) -> jwt.PyJWK:
        self.lookups += 1
        for key in self.issuer.jwks()["keys"]:
            if key["kid"] == kid:
                return jwt.PyJWK(key)
        raise AssertionError(kid)


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def issuer(tmp_path: Path) -> DevIssuer:
    return DevIssuer(tmp_path / "issuer", "http://127.0.0.1:1/realms/tenantflow")


def validator(issuer: DevIssuer, keys: Keys, clock: Clock) -> TokenValidator:
    settings = AuthSettings(issuer_url=issuer.issuer_url, leeway_seconds=0)
    return TokenValidator(settings, keys, refuse_dev_keys=False, clock=clock)  # type: ignore[arg-type]


async def test_a_verified_token_is_remembered_for_the_ttl_only(issuer: DevIssuer) -> None:
    keys, clock = Keys(issuer), Clock()
    check = validator(issuer, keys, clock)
    token = issuer.mint(subject="alice", roles=["infra-viewer"])
    first = await check.validate(token)
    again = await check.validate(token)
    assert keys.lookups == 1
    assert again == first and again is not first  # a copy: callers cannot alter the memory
    clock.now += VERIFIED_TTL_SECONDS + 1
    await check.validate(token)
    assert keys.lookups == 2


async def test_a_remembered_token_still_stops_at_its_expiry(issuer: DevIssuer) -> None:
    keys, clock = Keys(issuer), Clock()
    check = validator(issuer, keys, clock)
    token = issuer.mint(subject="bob", roles=["infra-viewer"], lifetime_seconds=20)
    await check.validate(token)
    await check.validate(token)
    assert keys.lookups == 1
    # Past the token's exp (by the validator's clock), within the TTL: the memory no longer
    # answers; the token goes through full verification again (which decides by its exp).
    clock.now += 25
    await check.validate(token)
    assert keys.lookups == 2


async def test_a_refused_token_is_not_remembered(issuer: DevIssuer) -> None:
    keys, clock = Keys(issuer), Clock()
    check = validator(issuer, keys, clock)
    forged = issuer.mint(subject="eve", roles=["infra-admin"], iss="https://elsewhere")
    for _ in range(2):
        with pytest.raises(InvalidToken):
            await check.validate(forged)
    assert keys.lookups == 2
