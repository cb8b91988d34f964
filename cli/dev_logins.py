"""The dev issuer's login state: sessions behind refresh tokens (on disk, so a restarted stack
keeps its users logged in), pending device logins (RFC 8628, in memory) and authorization codes
(RFC 7636 PKCE, in memory)."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from pathlib import Path
from typing import Any

from fastapi import HTTPException


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``, readable by its owner only (mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_bytes(data)


def oauth_error(status: int, error: str, description: str) -> HTTPException:
    """Keycloak's error document (``error``, ``error_description``) with its status."""
    return HTTPException(status, {"error": error, "error_description": description})


class Sessions:
    """Login sessions on disk, so a restarted dev stack keeps its users logged in. Only hashes
    of refresh tokens are stored; each refresh extends the session (Keycloak's idle timeout)."""

    idle_seconds = 1800

    def __init__(self, path: Path) -> None:
        self.path = path

    def _load(self) -> dict[str, dict[str, Any]]:
        if not self.path.exists():
            return {}
        loaded: dict[str, dict[str, Any]] = json.loads(self.path.read_text())
        now = time.time()
        return {h: s for h, s in loaded.items() if s["expires_at"] > now}

    def _save(self, sessions: dict[str, dict[str, Any]]) -> None:
        write_private(self.path, json.dumps(sessions, indent=2).encode())

    @staticmethod
    def _hash(refresh_token: str) -> str:
        return hashlib.sha256(refresh_token.encode()).hexdigest()

    def issue(self, sid: str, username: str, client_id: str) -> str:
        refresh_token = secrets.token_urlsafe(32)
        sessions = self._load()
        sessions[self._hash(refresh_token)] = {
            "sid": sid,
            "username": username,
            "client_id": client_id,
            "expires_at": time.time() + self.idle_seconds,
        }
        self._save(sessions)
        return refresh_token

    def find(self, refresh_token: str, client_id: str) -> dict[str, Any] | None:
        """The live session of ``refresh_token`` if it was issued to ``client_id``. Like
        Keycloak's default, a used refresh token stays valid until the session ends, so two
        commands refreshing at once both succeed."""
        session = self._load().get(self._hash(refresh_token))
        if session is None or session["client_id"] != client_id:
            return None
        return session

    def end(self, refresh_token: str, client_id: str) -> bool:
        sessions = self._load()
        session = sessions.get(self._hash(refresh_token))
        if session is None or session["client_id"] != client_id:
            return False
        self._save({h: s for h, s in sessions.items() if s["sid"] != session["sid"]})
        return True


class DeviceLogins:
    """Pending device logins, in memory: they live minutes, and a restart just means retrying."""

    lifetime_seconds = 600
    interval_seconds = 5
    _ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"  # no vowels, no look-alikes: no words, no typos

    def __init__(self) -> None:
        self._pending: dict[str, dict[str, Any]] = {}

    def start(self, client_id: str) -> tuple[str, str]:
        now = time.time()
        self._pending = {c: d for c, d in self._pending.items() if d["expires_at"] > now}
        device_code = secrets.token_urlsafe(32)
        letters = "".join(secrets.choice(self._ALPHABET) for _ in range(8))
        user_code = f"{letters[:4]}-{letters[4:]}"
        self._pending[device_code] = {
            "client_id": client_id,
            "user_code": user_code,
            "expires_at": now + self.lifetime_seconds,
            "username": None,
        }
        return device_code, user_code

    def approve(self, user_code: str, username: str) -> None:
        wanted = user_code.strip().upper().replace(" ", "")
        for pending in self._pending.values():
            if pending["user_code"] == wanted and pending["expires_at"] > time.time():
                pending["username"] = username
                return
        raise oauth_error(400, "invalid_grant", "Invalid or expired user code")

    def redeem(self, device_code: str, client_id: str) -> str:
        """The approving user's name, once; Keycloak's polling errors until then."""
        pending = self._pending.get(device_code)
        if pending is None or pending["client_id"] != client_id:
            raise oauth_error(400, "invalid_grant", "Invalid device code")
        if pending["expires_at"] <= time.time():
            del self._pending[device_code]
            raise oauth_error(400, "expired_token", "Device code expired")
        if pending["username"] is None:
            raise oauth_error(400, "authorization_pending", "The authorization request is pending")
        del self._pending[device_code]
        username: str = pending["username"]
        return username


class AuthorizationCodes:
    """Authorization codes of the code flow with PKCE, in memory: single use, one minute."""

    lifetime_seconds = 60

    def __init__(self) -> None:
        self._pending: dict[str, dict[str, Any]] = {}

    def issue(self, client_id: str, redirect_uri: str, challenge: str, username: str) -> str:
        now = time.time()
        self._pending = {c: d for c, d in self._pending.items() if d["expires_at"] > now}
        code = secrets.token_urlsafe(32)
        self._pending[code] = {
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "challenge": challenge,
            "username": username,
            "expires_at": now + self.lifetime_seconds,
        }
        return code

    def redeem(self, code: str, client_id: str, redirect_uri: str, verifier: str) -> str:
        """The signed-in user's name, once, for the client, redirect URI and PKCE verifier the
        code was issued to (RFC 7636, S256)."""
        pending = self._pending.pop(code, None)
        if (
            pending is None
            or pending["expires_at"] <= time.time()
            or pending["client_id"] != client_id
            or pending["redirect_uri"] != redirect_uri
        ):
            raise oauth_error(400, "invalid_grant", "Code not valid")
        digest = hashlib.sha256(verifier.encode()).digest()
        computed = base64.urlsafe_b64encode(digest).decode().rstrip("=")
        if not verifier or not secrets.compare_digest(computed, pending["challenge"]):
            raise oauth_error(400, "invalid_grant", "PKCE verification failed")
        username: str = pending["username"]
        return username
