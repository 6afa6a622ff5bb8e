"""Soko's Python client: the generated stubs (`soko.catalog.v1`, `soko.search.v1`, `soko.auth.v1`,
`soko.admin.v1`), plus channels with credentials and decoded errors."""

from .auth import ApiKeyAuth, AsyncApiKeyAuth, AsyncBearerAuth, BearerAuth, Tokens
from .channels import connect, connect_async
from .errors import FieldViolation, SokoError

__all__ = [
    "ApiKeyAuth",
    "AsyncApiKeyAuth",
    "AsyncBearerAuth",
    "BearerAuth",
    "FieldViolation",
    "SokoError",
    "Tokens",
    "connect",
    "connect_async",
]
