"""Soko's errors as Python values.

Every refusal carries a `google.rpc.Status` in the `grpc-status-details-bin` trailer: field
violations for INVALID_ARGUMENT, RetryInfo for RESOURCE_EXHAUSTED, ErrorInfo with a machine-readable
reason (for example READ_ONLY_MODE). `SokoError.of` decodes them from a sync or asyncio error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import grpc
from google.rpc import error_details_pb2, status_pb2

DETAILS_TRAILER = "grpc-status-details-bin"


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


@dataclass
class SokoError(Exception):
    """A failed call: its status code and message, and the details Soko attached."""

    code: grpc.StatusCode
    message: str
    field_violations: List[FieldViolation] = field(default_factory=list)
    #: Seconds to wait before retrying (RESOURCE_EXHAUSTED, UNAVAILABLE), when Soko said.
    retry_after: Optional[float] = None
    #: ErrorInfo: a stable reason such as "READ_ONLY_MODE", its domain and metadata.
    reason: Optional[str] = None
    domain: Optional[str] = None
    metadata: Dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        text = f"{self.code.name}: {self.message}"
        if self.field_violations:
            text += " (" + "; ".join(f"{v.field}: {v.description}" for v in self.field_violations) + ")"
        return text

    @classmethod
    def of(cls, error: grpc.RpcError) -> "SokoError":
        """Decodes a `grpc.RpcError` (sync) or `grpc.aio.AioRpcError`."""
        code = error.code()
        message = error.details() or ""
        trailers = error.trailing_metadata() or ()
        return cls.from_status(code, message, trailers)

    @classmethod
    def from_status(cls, code: grpc.StatusCode, message: str, trailers) -> "SokoError":
        error = cls(code=code, message=message)
        raw = next((value for key, value in trailers if key == DETAILS_TRAILER), None)
        if raw is None:
            return error
        status = status_pb2.Status.FromString(raw)
        for detail in status.details:
            if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                error.field_violations.extend(FieldViolation(v.field, v.description) for v in bad.field_violations)
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                error.retry_after = retry.retry_delay.ToTimedelta().total_seconds()
            elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                error.reason, error.domain, error.metadata = info.reason, info.domain, dict(info.metadata)
        return error
