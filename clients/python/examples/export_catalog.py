"""An internal service's job: authenticate with an API key and page through the whole catalog.

    SOKO_API_KEY=soko_ak_... python3 examples/export_catalog.py --addr localhost:50051 > catalog.jsonl

Prints one JSON object per product. Follows `next_page_token` until it is empty, and waits as told
when Soko answers RESOURCE_EXHAUSTED (a long export can outrun the key's quota).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import grpc
import soko_client
from google.protobuf import json_format
from soko.catalog.v1 import catalog_pb2, catalog_pb2_grpc


def export(addr: str, api_key: str, page_size: int, out) -> int:
    catalog = catalog_pb2_grpc.CatalogServiceStub(soko_client.connect(addr, api_key=api_key))
    count, page_token = 0, ""
    while True:
        request = catalog_pb2.ListProductsRequest(page_size=page_size, page_token=page_token)
        try:
            page = catalog.ListProducts(request, timeout=10)
        except grpc.RpcError as e:
            error = soko_client.SokoError.of(e)
            if error.code == grpc.StatusCode.RESOURCE_EXHAUSTED and error.retry_after is not None:
                time.sleep(error.retry_after)
                continue
            raise error from e
        for product in page.products:
            out.write(json.dumps(json_format.MessageToDict(product)) + "\n")
            count += 1
        if not page.next_page_token:
            return count
        page_token = page.next_page_token


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", default="localhost:50051")
    parser.add_argument("--page-size", type=int, default=100)
    args = parser.parse_args()
    api_key = os.environ.get("SOKO_API_KEY")
    if not api_key:
        print("SOKO_API_KEY is not set", file=sys.stderr)
        return 2
    try:
        count = export(args.addr, api_key, args.page_size, sys.stdout)
    except soko_client.SokoError as e:
        print(f"export failed: {e}", file=sys.stderr)
        return 1
    print(f"exported {count} products", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
