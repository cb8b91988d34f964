"""Authentication and authorisation: Keycloak JWTs, permissions, break-glass, rate limits.

Routes declare what they need with ``Annotated`` aliases from ``gateway.auth.deps``
(``principal: DatabasesRead``); nothing else in the gateway inspects tokens.
"""
