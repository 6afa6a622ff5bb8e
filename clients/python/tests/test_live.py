"""The client against a real Soko server, started by the Rust integration test
`clients::the_python_client_*`, which passes its address and credentials in the environment:
SOKO_ADDR, SOKO_EMAIL and SOKO_PASSWORD (a seller), SOKO_API_KEY. Skipped without SOKO_ADDR."""

import asyncio
import os
import unittest

import grpc
from soko.auth.v1 import auth_pb2, auth_pb2_grpc
from soko.catalog.v1 import catalog_pb2, catalog_pb2_grpc

import soko_client

ADDR = os.environ.get("SOKO_ADDR")


def login() -> soko_client.Tokens:
    channel = soko_client.connect(ADDR)
    response = auth_pb2_grpc.AuthServiceStub(channel).Login(
        auth_pb2.LoginRequest(email=os.environ["SOKO_EMAIL"], password=os.environ["SOKO_PASSWORD"]))
    return soko_client.Tokens(response.tokens.access_token, response.tokens.refresh_token)


@unittest.skipUnless(ADDR, "needs a server: run through `cargo test --test it clients`")
class SyncClientTest(unittest.TestCase):
    def test_a_bearer_call_succeeds(self):
        me = auth_pb2_grpc.AuthServiceStub(soko_client.connect(ADDR, tokens=login())).Me(auth_pb2.MeRequest())
        self.assertEqual(me.user.email, os.environ["SOKO_EMAIL"])

    def test_an_expired_access_token_is_refreshed_once_and_the_call_retried(self):
        tokens = login()
        old_refresh = tokens.refresh_token
        seen = []
        tokens.on_refresh = seen.append
        tokens.access_token = "expired-or-revoked"
        me = auth_pb2_grpc.AuthServiceStub(soko_client.connect(ADDR, tokens=tokens)).Me(auth_pb2.MeRequest())
        self.assertEqual(me.user.email, os.environ["SOKO_EMAIL"])
        self.assertEqual(len(seen), 1)
        self.assertNotEqual(tokens.refresh_token, old_refresh, "Soko rotates the refresh token")

    def test_without_a_refresh_token_unauthenticated_is_the_answer(self):
        channel = soko_client.connect(ADDR, tokens=soko_client.Tokens("not-a-token"))
        with self.assertRaises(grpc.RpcError) as caught:
            auth_pb2_grpc.AuthServiceStub(channel).Me(auth_pb2.MeRequest())
        self.assertEqual(soko_client.SokoError.of(caught.exception).code, grpc.StatusCode.UNAUTHENTICATED)

    def test_bad_input_comes_back_as_field_violations(self):
        catalog = catalog_pb2_grpc.CatalogServiceStub(soko_client.connect(ADDR))
        with self.assertRaises(grpc.RpcError) as caught:
            catalog.GetProduct(catalog_pb2.GetProductRequest(id="not-an-id"))
        error = soko_client.SokoError.of(caught.exception)
        self.assertEqual(error.code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual([v.field for v in error.field_violations], ["id"])

    def test_an_api_key_authenticates(self):
        channel = soko_client.connect(ADDR, api_key=os.environ["SOKO_API_KEY"])
        me = auth_pb2_grpc.AuthServiceStub(channel).Me(auth_pb2.MeRequest())
        self.assertTrue(me.user.id)


@unittest.skipUnless(ADDR, "needs a server: run through `cargo test --test it clients`")
class AsyncClientTest(unittest.TestCase):
    def test_asyncio_calls_refresh_too(self):
        async def run():
            tokens = login()
            tokens.access_token = "expired-or-revoked"
            async with soko_client.connect_async(ADDR, tokens=tokens) as channel:
                stub = auth_pb2_grpc.AuthServiceStub(channel)
                first, second = await asyncio.gather(stub.Me(auth_pb2.MeRequest()), stub.Me(auth_pb2.MeRequest()))
                return first, second

        first, second = asyncio.run(run())
        self.assertEqual(first.user.email, os.environ["SOKO_EMAIL"])
        self.assertEqual(second.user.email, os.environ["SOKO_EMAIL"])

    def test_asyncio_errors_decode(self):
        async def run():
            async with soko_client.connect_async(ADDR) as channel:
                try:
                    await catalog_pb2_grpc.CatalogServiceStub(channel).GetProduct(
                        catalog_pb2.GetProductRequest(id="not-an-id"))
                except grpc.aio.AioRpcError as e:
                    return soko_client.SokoError.of(e)

        error = asyncio.run(run())
        self.assertEqual([v.field for v in error.field_violations], ["id"])


if __name__ == "__main__":
    unittest.main()
