"""Decoding of google.rpc details, without a server."""

import unittest

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from soko_client import FieldViolation, SokoError


def packed(message) -> any_pb2.Any:
    detail = any_pb2.Any()
    detail.Pack(message)
    return detail


class DecodeTest(unittest.TestCase):
    def test_every_detail_soko_sends_is_decoded(self):
        status = status_pb2.Status(code=8, message="slow down", details=[
            packed(error_details_pb2.BadRequest(field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field="price", description="must be positive")])),
            packed(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=1, nanos=500_000_000))),
            packed(error_details_pb2.ErrorInfo(reason="READ_ONLY_MODE", domain="soko", metadata={"cause": "manual"})),
        ])
        error = SokoError.from_status(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down",
                                      [("grpc-status-details-bin", status.SerializeToString())])
        self.assertEqual(error.field_violations, [FieldViolation("price", "must be positive")])
        self.assertEqual(error.retry_after, 1.5)
        self.assertEqual((error.reason, error.domain, error.metadata), ("READ_ONLY_MODE", "soko", {"cause": "manual"}))
        self.assertIn("price: must be positive", str(error))

    def test_an_error_without_details_keeps_its_code_and_message(self):
        error = SokoError.from_status(grpc.StatusCode.NOT_FOUND, "no such product", [])
        self.assertEqual((error.code, error.message, error.field_violations), (grpc.StatusCode.NOT_FOUND, "no such product", []))


if __name__ == "__main__":
    unittest.main()
