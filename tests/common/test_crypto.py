"""Credentials at rest: AES-256-GCM tokens, key rotation and error hygiene."""

from __future__ import annotations

import base64

import pytest
from pydantic import SecretStr

from common.crypto import (
    CredentialCipher,
    CredentialDecryptionError,
    KeyRing,
    generate_key,
    is_dev_key,
)
from common.errors import ConfigurationError, TenantflowError
from common.settings import DEV_ENCRYPTION_KEY, DEV_ENCRYPTION_KEY_ID, CryptoSettings

SECRET = "hunter2-p@ss:word/ünïcode"
CONTEXT = "database:42:password"
KEY_A = bytes(range(32))
KEY_B = bytes(range(32, 64))


def _cipher(active: str = "a", **keys: bytes) -> CredentialCipher:
    return CredentialCipher(KeyRing(keys or {"a": KEY_A}, active))


def _flip_last_char(token: str) -> str:
    # Not literally the last character: in unpadded base64 its low bits may be padding that
    # decoders ignore, which made this test flaky. A character mid-body always carries data.
    middle = len(token) - 8
    swapped = "A" if token[middle] != "A" else "B"
    return token[:middle] + swapped + token[middle + 1 :]


def _assert_hygienic(err: CredentialDecryptionError, *secrets: str) -> None:
    text = f"{err} {err.message} {err.details} {err.to_dict()} {err!r}"
    for secret in secrets:
        assert secret not in text


def test_round_trip_and_token_shape() -> None:
    cipher = _cipher()
    token = cipher.encrypt(SECRET, context=CONTEXT)
    assert token.startswith("tf1:a:")
    body = token.split(":", 2)[2]
    assert "=" not in body
    assert (
        len(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        == 12 + len(SECRET.encode()) + 16
    )
    assert cipher.decrypt(token, context=CONTEXT) == SECRET
    assert SECRET not in token


def test_empty_plaintext_round_trips() -> None:
    cipher = _cipher()
    assert cipher.decrypt(cipher.encrypt("", context=CONTEXT), context=CONTEXT) == ""


def test_empty_context_is_refused() -> None:
    with pytest.raises(ValueError, match="context"):
        _cipher().encrypt(SECRET, context="")


def test_each_encryption_uses_a_fresh_nonce() -> None:
    cipher = _cipher()
    tokens = {cipher.encrypt(SECRET, context=CONTEXT) for _ in range(20)}
    assert len(tokens) == 20
    nonces = {base64.urlsafe_b64decode(t.split(":")[2] + "==")[:12] for t in tokens}
    assert len(nonces) == 20


def test_wrong_context_fails() -> None:
    cipher = _cipher()
    token = cipher.encrypt(SECRET, context=CONTEXT)
    with pytest.raises(CredentialDecryptionError) as info:
        cipher.decrypt(token, context="database:43:password")
    assert info.value.details["reason"] == "authentication_failed"
    assert info.value.details["key_id"] == "a"
    _assert_hygienic(info.value, SECRET, token)


@pytest.mark.parametrize("position", [6, 20, -1])
def test_tampered_token_fails(position: int) -> None:
    cipher = _cipher()
    token = cipher.encrypt(SECRET, context=CONTEXT)
    # Flip one bit of one byte of the decoded blob (nonce, ciphertext and tag positions).
    body = token.split(":", 2)[2]
    blob = bytearray(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    blob[position] ^= 0x01
    tampered = "tf1:a:" + base64.urlsafe_b64encode(bytes(blob)).decode().rstrip("=")
    assert tampered != token
    with pytest.raises(CredentialDecryptionError) as info:
        cipher.decrypt(tampered, context=CONTEXT)
    _assert_hygienic(info.value, SECRET, tampered, token)


def test_tampered_character_fails() -> None:
    cipher = _cipher()
    token = cipher.encrypt(SECRET, context=CONTEXT)
    with pytest.raises(CredentialDecryptionError):
        cipher.decrypt(_flip_last_char(token), context=CONTEXT)


def test_unknown_key_id_fails() -> None:
    token = _cipher("a", a=KEY_A).encrypt(SECRET, context=CONTEXT)
    other = _cipher("b", b=KEY_B)
    with pytest.raises(CredentialDecryptionError) as info:
        other.decrypt(token, context=CONTEXT)
    assert info.value.details == {"reason": "unknown_key_id", "key_id": "a", "context": CONTEXT}
    _assert_hygienic(info.value, SECRET, token)


def test_same_id_different_key_fails() -> None:
    token = _cipher("a", a=KEY_A).encrypt(SECRET, context=CONTEXT)
    with pytest.raises(CredentialDecryptionError):
        _cipher("a", a=KEY_B).decrypt(token, context=CONTEXT)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "plaintext-password",
        "tf1:a:",
        "tf1::AAAA",
        "tf2:a:" + "A" * 60,
        "tf1:a:" + "A" * 10,  # shorter than nonce + tag
        "tf1:a:" + "A" * 57,  # impossible base64 length
        "tf1:a:" + "A" * 40 + "+/",  # standard, not url-safe, alphabet
        "tf1:a:b:" + "A" * 60,
    ],
)
def test_malformed_tokens_fail(token: str) -> None:
    cipher = _cipher()
    with pytest.raises(CredentialDecryptionError) as info:
        cipher.decrypt(token, context=CONTEXT)
    assert info.value.details["reason"] == "malformed_token"
    if token:
        _assert_hygienic(info.value, token)


def test_error_is_a_tenantflow_error_without_secrets() -> None:
    cipher = _cipher()
    token = cipher.encrypt(SECRET, context=CONTEXT)
    with pytest.raises(CredentialDecryptionError) as info:
        cipher.decrypt(token, context="database:1:password")
    err = info.value
    assert isinstance(err, TenantflowError)
    assert err.status_code == 500
    assert err.error_type == "credential_decryption_failed"
    assert err.to_dict()["type"] == "credential_decryption_failed"
    body = token.split(":", 2)[2]
    _assert_hygienic(err, SECRET, token, body, body[:16], KEY_A.hex())
    assert err.__cause__ is None
    assert err.__suppress_context__


def test_old_ciphertext_decrypts_after_active_key_changes() -> None:
    old = _cipher("a", a=KEY_A)
    token = old.encrypt(SECRET, context=CONTEXT)
    rotated = _cipher("b", a=KEY_A, b=KEY_B)
    assert rotated.decrypt(token, context=CONTEXT) == SECRET
    assert rotated.encrypt(SECRET, context=CONTEXT).startswith("tf1:b:")


def test_needs_rotation_and_rotate() -> None:
    token = _cipher("a", a=KEY_A).encrypt(SECRET, context=CONTEXT)
    cipher = _cipher("b", a=KEY_A, b=KEY_B)
    assert cipher.needs_rotation(token)
    assert cipher.key_id_of(token) == "a"

    new = cipher.rotate(token, context=CONTEXT)
    assert new.startswith("tf1:b:")
    assert not cipher.needs_rotation(new)
    assert cipher.decrypt(new, context=CONTEXT) == SECRET
    # Rotating an up-to-date token is a no-op, and the old key is no longer needed for it.
    assert cipher.rotate(new, context=CONTEXT) == new
    assert _cipher("b", b=KEY_B).decrypt(new, context=CONTEXT) == SECRET


def test_rotate_keeps_the_context_binding() -> None:
    token = _cipher("a", a=KEY_A).encrypt(SECRET, context=CONTEXT)
    cipher = _cipher("b", a=KEY_A, b=KEY_B)
    new = cipher.rotate(token, context=CONTEXT)
    with pytest.raises(CredentialDecryptionError):
        cipher.decrypt(new, context="database:7:password")
    with pytest.raises(CredentialDecryptionError):
        cipher.rotate(token, context="database:7:password")


def test_rotate_verifies_tokens_already_under_the_active_key() -> None:
    cipher = _cipher()
    token = cipher.encrypt(SECRET, context=CONTEXT)
    with pytest.raises(CredentialDecryptionError):
        cipher.rotate(token, context="database:7:password")


def test_needs_rotation_with_unconfigured_key_and_malformed_token() -> None:
    token = _cipher("a", a=KEY_A).encrypt(SECRET, context=CONTEXT)
    cipher = _cipher("b", b=KEY_B)
    assert cipher.needs_rotation(token)
    with pytest.raises(CredentialDecryptionError):
        cipher.rotate(token, context=CONTEXT)
    with pytest.raises(CredentialDecryptionError):
        cipher.needs_rotation("not-a-token")


def test_key_ring_from_settings() -> None:
    second = generate_key()
    ring = KeyRing.from_settings(
        CryptoSettings(
            keys={"dev": SecretStr(DEV_ENCRYPTION_KEY), "k2": SecretStr(second)},
            active_key_id="k2",
        )
    )
    assert ring.active_key_id == "k2"
    assert ring.key_ids == ("dev", "k2")
    assert "dev" in ring
    token = CredentialCipher(ring).encrypt(SECRET, context=CONTEXT)
    assert token.startswith("tf1:k2:")
    default = KeyRing.from_settings(CryptoSettings())
    assert default.key_ids == (DEV_ENCRYPTION_KEY_ID,)


def test_aead_of_unknown_key_id_raises_key_error() -> None:
    ring = KeyRing({"a": KEY_A}, "a")
    assert ring.aead("a") is ring.aead("a")
    with pytest.raises(KeyError, match="'zz'"):
        ring.aead("zz")


@pytest.mark.parametrize(
    "bad",
    [
        "not base64 at all!",
        base64.b64encode(b"\x01" * 16).decode(),  # AES-128 sized
        base64.b64encode(b"\x01" * 33).decode(),
        "",
    ],
    ids=["not-base64", "16-bytes", "33-bytes", "empty"],
)
def test_bad_key_names_the_key_id_only(bad: str) -> None:
    settings = CryptoSettings(
        keys={"good": SecretStr(generate_key()), "broken-key": SecretStr(bad)},
        active_key_id="good",
    )
    with pytest.raises(ConfigurationError) as info:
        KeyRing.from_settings(settings)
    err = info.value
    assert "broken-key" in err.message
    assert err.details == {"key_id": "broken-key"}
    assert err.__cause__ is None
    text = f"{err} {err.details} {err!r}"
    if bad:
        assert bad not in text
    good = settings.keys["good"].get_secret_value()
    assert good not in text


def test_raw_key_of_wrong_length_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="'short'"):
        KeyRing({"short": b"\x00" * 16}, "short")


def test_active_key_must_be_configured_and_ids_valid() -> None:
    with pytest.raises(ConfigurationError, match="'missing'"):
        KeyRing({"a": KEY_A}, "missing")
    with pytest.raises(ConfigurationError, match="key ids"):
        KeyRing({"has:colon": KEY_A}, "has:colon")
    with pytest.raises(ConfigurationError, match="no encryption keys"):
        KeyRing({}, "a")


def test_generate_key() -> None:
    keys = {generate_key() for _ in range(5)}
    assert len(keys) == 5
    for key in keys:
        assert len(base64.b64decode(key, validate=True)) == 32
        KeyRing.from_settings(CryptoSettings(keys={"x": SecretStr(key)}, active_key_id="x"))


def test_is_dev_key() -> None:
    assert is_dev_key(CryptoSettings())
    assert is_dev_key(
        CryptoSettings(
            keys={"prod": SecretStr(generate_key()), "old": SecretStr(DEV_ENCRYPTION_KEY)},
            active_key_id="prod",
        )
    )
    # Cosmetic variations of the dev key are still the dev key.
    assert is_dev_key(
        CryptoSettings(keys={"x": SecretStr(f"  {DEV_ENCRYPTION_KEY}\n")}, active_key_id="x")
    )
    assert not is_dev_key(
        CryptoSettings(keys={"prod": SecretStr(generate_key())}, active_key_id="prod")
    )
    assert not is_dev_key(CryptoSettings(keys={"x": SecretStr("junk!")}, active_key_id="x"))


def test_reprs_show_key_ids_only() -> None:
    encoded = generate_key()
    ring = KeyRing.from_settings(
        CryptoSettings(
            keys={"dev": SecretStr(DEV_ENCRYPTION_KEY), "k2": SecretStr(encoded)},
            active_key_id="k2",
        )
    )
    cipher = CredentialCipher(ring)
    raw = base64.b64decode(encoded)
    for text in (repr(ring), str(ring), repr(cipher), str(cipher)):
        assert "'dev'" in text
        assert "'k2'" in text
        assert encoded not in text
        assert DEV_ENCRYPTION_KEY not in text
        assert raw.hex() not in text
        assert repr(raw) not in text
    assert repr(ring) == "KeyRing(key_ids=['dev', 'k2'], active_key_id='k2')"
    assert repr(cipher) == "CredentialCipher(key_ids=['dev', 'k2'], active_key_id='k2')"
