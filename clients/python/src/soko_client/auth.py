"""Credentials on every call: a bearer token that refreshes itself, or an API key.

Both are client interceptors, for sync channels and for asyncio channels. The bearer token's
refresh happens once per expiry: the first call answered UNAUTHENTICATED exchanges the refresh
token (AuthService.Refresh) and is retried once with the new access token; concurrent calls wait
for that one exchange rather than each spending the refresh token (Soko rotates it on use).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Callable, Optional

import grpc

from soko.auth.v1 import auth_pb2, auth_pb2_grpc

API_KEY_HEADER = "x-api-key"


def _with_metadata(details, key: str, value: str):
    metadata = [(k, v) for k, v in (details.metadata or ()) if k != key]
    metadata.append((key, value))
    return details._replace(metadata=metadata)


class _Details(grpc.ClientCallDetails):
    """`grpc.ClientCallDetails` with `_replace`, which sync interceptors need to add metadata."""

    def __init__(self, method, timeout, metadata, credentials, wait_for_ready, compression):
        self.method, self.timeout, self.metadata = method, timeout, metadata
        self.credentials, self.wait_for_ready, self.compression = credentials, wait_for_ready, compression

    @classmethod
    def of(cls, details) -> "_Details":
        return cls(
            details.method,
            details.timeout,
            details.metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def _replace(self, **changes) -> "_Details":
        fields = dict(vars(self))
        fields.update(changes)
        return _Details(**fields)


class Tokens:
    """An access token and, optionally, the refresh token that renews it."""

    def __init__(self, access_token: str, refresh_token: Optional[str] = None,
                 on_refresh: Optional[Callable[[auth_pb2.TokenPair], None]] = None):
        self.access_token = access_token
        self.refresh_token = refresh_token
        #: Called with each new pair, so an app can store it.
        self.on_refresh = on_refresh
        self._lock = threading.Lock()
        self._alock: Optional[asyncio.Lock] = None

    def _store(self, pair: auth_pb2.TokenPair) -> None:
        self.access_token, self.refresh_token = pair.access_token, pair.refresh_token
        if self.on_refresh:
            self.on_refresh(pair)

    def refresh(self, channel: grpc.Channel, stale: str) -> bool:
        """Exchanges the refresh token, unless another call already did since `stale` failed."""
        with self._lock:
            if self.access_token != stale:
                return True
            if not self.refresh_token:
                return False
            response = auth_pb2_grpc.AuthServiceStub(channel).Refresh(
                auth_pb2.RefreshRequest(refresh_token=self.refresh_token))
            self._store(response.tokens)
            return True

    async def refresh_async(self, channel: grpc.aio.Channel, stale: str) -> bool:
        if self._alock is None:
            self._alock = asyncio.Lock()
        async with self._alock:
            if self.access_token != stale:
                return True
            if not self.refresh_token:
                return False
            response = await auth_pb2_grpc.AuthServiceStub(channel).Refresh(
                auth_pb2.RefreshRequest(refresh_token=self.refresh_token))
            self._store(response.tokens)
            return True


class BearerAuth(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Sends `authorization: Bearer <access token>`; refreshes and retries once on UNAUTHENTICATED.

    `refresh_channel` is a channel to the same server without this interceptor (the channel
    factories in `soko_client.channels` make one).
    """

    def __init__(self, tokens: Tokens, refresh_channel: grpc.Channel):
        self.tokens = tokens
        self._refresh_channel = refresh_channel

    def _sign(self, details):
        return _with_metadata(_Details.of(details), "authorization", f"Bearer {self.tokens.access_token}")

    def intercept_unary_unary(self, continuation, client_call_details, request):
        used = self.tokens.access_token
        outcome = continuation(self._sign(client_call_details), request)
        if outcome.code() == grpc.StatusCode.UNAUTHENTICATED and self.tokens.refresh(self._refresh_channel, used):
            outcome = continuation(self._sign(client_call_details), request)
        return outcome

    def intercept_unary_stream(self, continuation, client_call_details, request):
        # A stream's status arrives at its end, after responses were handed out: no retry.
        return continuation(self._sign(client_call_details), request)


class AsyncBearerAuth(grpc.aio.UnaryUnaryClientInterceptor):
    """`BearerAuth` for asyncio channels."""

    def __init__(self, tokens: Tokens, refresh_channel: grpc.aio.Channel):
        self.tokens = tokens
        self._refresh_channel = refresh_channel

    def _sign(self, details):
        metadata = grpc.aio.Metadata(*[(k, v) for k, v in (details.metadata or ()) if k != "authorization"])
        metadata.add("authorization", f"Bearer {self.tokens.access_token}")
        return grpc.aio.ClientCallDetails(details.method, details.timeout, metadata, details.credentials,
                                          details.wait_for_ready)

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        used = self.tokens.access_token
        call = await continuation(self._sign(client_call_details), request)
        if await call.code() == grpc.StatusCode.UNAUTHENTICATED and await self.tokens.refresh_async(
                self._refresh_channel, used):
            call = await continuation(self._sign(client_call_details), request)
        return call


class ApiKeyAuth(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Sends `x-api-key`: how internal services authenticate (keys come from AdminService.CreateApiKey)."""

    def __init__(self, key: str):
        self.key = key

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(_with_metadata(_Details.of(client_call_details), API_KEY_HEADER, self.key), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(_with_metadata(_Details.of(client_call_details), API_KEY_HEADER, self.key), request)


class AsyncApiKeyAuth(grpc.aio.UnaryUnaryClientInterceptor):
    """`ApiKeyAuth` for asyncio channels."""

    def __init__(self, key: str):
        self.key = key

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        metadata = grpc.aio.Metadata(*[(k, v) for k, v in (client_call_details.metadata or ()) if k != API_KEY_HEADER])
        metadata.add(API_KEY_HEADER, self.key)
        details = grpc.aio.ClientCallDetails(client_call_details.method, client_call_details.timeout, metadata,
                                             client_call_details.credentials, client_call_details.wait_for_ready)
        return await continuation(details, request)
