"""Which networks target databases and servers may be on (``TENANTFLOW_NETWORK__*``).

Checked twice. When a target, server or tenant is registered (or its host changed) through the
API, ``check_registered_host`` refuses a literal address or a socket directory the policy refuses,
with a 422 naming the host and the setting. Host names are not resolved there: the gateway may
not see the workers' DNS. When a worker connects, ``connect`` (the one door every activity's
target connection goes through) resolves the host, checks every address it resolves to and then
connects to those checked addresses, so a name that resolves into a refused network is refused
too, and a second DNS answer cannot move the connection elsewhere (DNS rebinding). A refused
target fails with ``NetworkRefused``: non-retryable, naming the host and the setting, never the
credentials.

The decision for one address: the most specific network of ``allowed_networks`` and
``denied_networks`` that contains it decides; where the same network is in both, allowed wins
(that is how an operator lifts a default refusal). An address in neither is refused.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
from temporalio.exceptions import ApplicationError

from common.errors import TenantflowError
from common.settings import NetworkSettings, get_settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOWED_SETTING = "TENANTFLOW_NETWORK__ALLOWED_NETWORKS"
DENIED_SETTING = "TENANTFLOW_NETWORK__DENIED_NETWORKS"
SOCKETS_SETTING = "TENANTFLOW_NETWORK__ALLOW_UNIX_SOCKETS"
# IPv6 prefixes that carry an IPv4 address a gateway translates to (RFC 6052 NAT64, RFC 3056
# 6to4): such an address reaches the IPv4 one, so that one must be allowed as well.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


@dataclass(frozen=True)
class Refusal:
    """Why a host is refused: the address, the network that decided and the setting to change."""

    host: str
    address: str | None
    network: str | None
    setting: str

    def message(self) -> str:
        """One sentence naming the host, the address and the setting (never credentials)."""
        if self.address is None:
            return f"target host {self.host!r} is a socket directory, which {self.setting} refuses"
        subject = f"target host {self.host!r}"
        if self.address != self.host:
            subject += f" resolves to {self.address},"
        else:
            subject += " is"
        if self.network is None:
            return f"{subject} in no network of {self.setting}"
        return f"{subject} in {self.network}, which {self.setting} refuses"

    def details(self) -> dict[str, Any]:
        """The error envelope's details."""
        return {
            "host": self.host,
            "address": self.address,
            "network": self.network,
            "setting": self.setting,
        }


class HostNotAllowed(TenantflowError):
    """A registration names a host on a network the allow-list refuses (API: 422)."""

    status_code = 422
    error_type = "network_refused"


class NetworkRefused(ApplicationError):
    """A worker refused to connect to a target: its (resolved) address is refused.

    An ``ApplicationError`` marked non-retryable, so Temporal never retries it: the target's
    address does not change by trying again. Batch activities record it on the target.
    """

    def __init__(self, refusal: Refusal) -> None:
        # Retrying cannot help: only a changed setting or host can.
        super().__init__(
            refusal.message(), refusal.details(), type="NetworkRefused", non_retryable=True
        )
        self.refusal = refusal


def parse_address(host: str) -> IPAddress | None:
    """The IP address a host is written as (``[::1]`` included), or None for a name."""
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


def is_socket_directory(host: str) -> bool:
    """asyncpg (like libpq) reads a host starting with ``/`` as a Unix socket directory."""
    return host.startswith("/")


class NetworkPolicy:
    """The allow-list of ``NetworkSettings``, ready to decide addresses."""

    def __init__(self, settings: NetworkSettings) -> None:
        self.settings = settings
        rules: list[tuple[IPNetwork, bool]] = [(n, True) for n in settings.allowed_networks]
        rules += [(n, False) for n in settings.denied_networks]
        # Most specific first; for the same network, allowed (True) before denied (False).
        rules.sort(key=lambda rule: (-rule[0].prefixlen, not rule[1]))
        self._rules = rules

    def refusal_of(self, address: IPAddress, host: str) -> Refusal | None:
        """Why ``address`` (which ``host`` is or resolves to) is refused, or None."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            # A mapped address is an IPv4 connection: only the IPv4 address counts.
            return self.refusal_of(address.ipv4_mapped, host)
        refusal = self._decide(address, host)
        if refusal is not None:
            return refusal
        embedded = _embedded_ipv4(address)
        return None if embedded is None else self._decide(embedded, host, shown=address)

    def _decide(
        self, address: IPAddress, host: str, shown: IPAddress | None = None
    ) -> Refusal | None:
        written = str(shown or address)
        for network, allowed in self._rules:
            if network.version == address.version and address in network:
                if allowed:
                    return None
                return Refusal(host, written, str(network), DENIED_SETTING)
        return Refusal(host, written, None, ALLOWED_SETTING)

    def registration_refusal(self, host: str) -> Refusal | None:
        """The refusal of a host as registered: a socket directory or a literal address. A
        name is decided at connection time, on what it resolves to."""
        if is_socket_directory(host):
            if self.settings.allow_unix_sockets:
                return None
            return Refusal(host, None, None, SOCKETS_SETTING)
        address = parse_address(host)
        return None if address is None else self.refusal_of(address, host)

    async def resolve(self, host: str, port: int) -> list[str]:
        """The checked addresses to connect to for ``host``; ``NetworkRefused`` when any
        address it resolves to is refused (``socket.gaierror`` when it resolves to none)."""
        refusal = self.registration_refusal(host)
        if refusal is not None:
            raise NetworkRefused(refusal)
        if is_socket_directory(host) or parse_address(host) is not None:
            return [host]
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.settings.resolve_timeout_seconds):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        for text in addresses:
            address = parse_address(text)
            refusal = (
                Refusal(host, text, None, ALLOWED_SETTING)
                if address is None
                else self.refusal_of(address, host)
            )
            if refusal is not None:
                # One refused address refuses the name: which one a connection gets is DNS's.
                raise NetworkRefused(refusal)
        return addresses

    async def pinned(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """asyncpg ``connect`` arguments whose host is the checked addresses. A connection that
        verifies the server certificate against the name (``verify-full``) keeps the name: the
        certificate binds it to the name, and TLS needs it for SNI and the check."""
        pinned = dict(params)
        if params.get("host") is None:
            # A DSN of the operator's own (the catalog's server, where the health sweep
            # replays references), never a registered target: not the allow-list's to decide.
            return pinned
        host = str(params["host"])
        addresses = await self.resolve(host, int(params.get("port") or 5432))
        if addresses == [host] or _verifies_host_name(params.get("ssl")):
            return pinned
        pinned["host"] = addresses[0] if len(addresses) == 1 else addresses
        return pinned


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
    return address.sixtofour


def _verifies_host_name(ssl_mode: object) -> bool:
    if isinstance(ssl_mode, ssl.SSLContext):
        return ssl_mode.check_hostname
    if ssl_mode is None:
        # asyncpg's default comes from the environment, as libpq's does.
        ssl_mode = os.environ.get("PGSSLMODE")
    return ssl_mode == "verify-full"


_policy: NetworkPolicy | None = None


def configure(settings: NetworkSettings | None) -> NetworkPolicy | None:
    """Make ``settings`` the policy of this process's connections (a worker calls it at start);
    None returns to the process settings' ``network`` section, read at the next connection."""
    global _policy
    _policy = None if settings is None else NetworkPolicy(settings)
    return _policy


def active_policy() -> NetworkPolicy:
    """The policy every target connection of this process goes through."""
    global _policy
    if _policy is None:
        _policy = NetworkPolicy(get_settings().network)
    return _policy


def check_registered_host(host: str, settings: NetworkSettings) -> None:
    """``HostNotAllowed`` (422) when a host being registered is refused (see the module)."""
    refusal = NetworkPolicy(settings).registration_refusal(host)
    if refusal is not None:
        raise HostNotAllowed(refusal.message(), details=refusal.details())


async def connect(params: Mapping[str, Any], /, **options: Any) -> asyncpg.Connection:
    """``asyncpg.connect(**params, **options)`` through the network policy: the one way
    activities connect to targets and servers (``NetworkRefused`` when refused)."""
    pinned = await active_policy().pinned(params)
    connection: asyncpg.Connection = await asyncpg.connect(**pinned, **options)
    return connection
