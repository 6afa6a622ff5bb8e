// Browsers and React Native: the grpc-web protocol, which Soko serves on its gRPC port (allow the
// page's origin with SOKO_CORS_ORIGINS).
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import type { Transport } from "@connectrpc/connect";
import { interceptorsFor, type Credentials } from "./credentials.js";

export function webTransport(baseUrl: string, credentials: Credentials = {}): Transport {
  const bare = () => createGrpcWebTransport({ baseUrl });
  return createGrpcWebTransport({ baseUrl, interceptors: interceptorsFor(credentials, bare) });
}
