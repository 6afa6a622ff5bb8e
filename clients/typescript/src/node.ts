// Node services: gRPC over HTTP/2.
import { createGrpcTransport } from "@connectrpc/connect-node";
import type { Transport } from "@connectrpc/connect";
import { interceptorsFor, type Credentials } from "./credentials.js";

export function nodeTransport(baseUrl: string, credentials: Credentials = {}): Transport {
  const bare = () => createGrpcTransport({ baseUrl });
  return createGrpcTransport({ baseUrl, interceptors: interceptorsFor(credentials, bare) });
}
