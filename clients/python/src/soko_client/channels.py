"""Channels to Soko, sync and asyncio, with credentials attached.

    channel = soko_client.connect("soko.example.com:443", tls=True, tokens=Tokens(access, refresh))
    catalog = CatalogServiceStub(channel)

Soko refuses messages over its size limits itself; the client's receive limit is raised to match
the largest answer (a page of 100 products with their embeddings).
"""

from __future__ import annotations

from typing import Optional

import grpc

from .auth import ApiKeyAuth, AsyncApiKeyAuth, AsyncBearerAuth, BearerAuth, Tokens

_OPTIONS = [
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    # Notice a dead connection within a minute instead of at the next call's deadline.
    ("grpc.keepalive_time_ms", 60_000),
]


def _credentials(tls: bool, root_certificates: Optional[bytes]):
    return grpc.ssl_channel_credentials(root_certificates) if tls else None


def connect(target: str, *, tokens: Optional[Tokens] = None, api_key: Optional[str] = None, tls: bool = False,
            root_certificates: Optional[bytes] = None) -> grpc.Channel:
    """A sync channel; with `tokens` or `api_key`, every call carries them."""
    credentials = _credentials(tls, root_certificates)
    base = (grpc.secure_channel(target, credentials, _OPTIONS) if credentials
            else grpc.insecure_channel(target, _OPTIONS))
    if tokens is not None and api_key is not None:
        raise ValueError("pass tokens or api_key, not both")
    if tokens is not None:
        return grpc.intercept_channel(base, BearerAuth(tokens, base))
    if api_key is not None:
        return grpc.intercept_channel(base, ApiKeyAuth(api_key))
    return base


def connect_async(target: str, *, tokens: Optional[Tokens] = None, api_key: Optional[str] = None, tls: bool = False,
                  root_certificates: Optional[bytes] = None) -> grpc.aio.Channel:
    """An asyncio channel; with `tokens` or `api_key`, every unary call carries them."""
    if tokens is not None and api_key is not None:
        raise ValueError("pass tokens or api_key, not both")
    credentials = _credentials(tls, root_certificates)

    def make(interceptors):
        if credentials:
            return grpc.aio.secure_channel(target, credentials, _OPTIONS, interceptors=interceptors)
        return grpc.aio.insecure_channel(target, _OPTIONS, interceptors=interceptors)

    if tokens is not None:
        return make([AsyncBearerAuth(tokens, make(None))])
    if api_key is not None:
        return make([AsyncApiKeyAuth(api_key)])
    return make(None)
