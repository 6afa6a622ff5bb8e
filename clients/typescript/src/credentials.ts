import type { Interceptor, Transport } from "@connectrpc/connect";
import { apiKeyAuth, bearerAuth, type Tokens } from "./auth.js";

export interface Credentials {
  tokens?: Tokens;
  apiKey?: string;
}

/** The interceptors for `credentials`, given a way to make a transport without them. */
export function interceptorsFor(credentials: Credentials, bare: () => Transport): Interceptor[] {
  if (credentials.tokens && credentials.apiKey) throw new Error("pass tokens or apiKey, not both");
  if (credentials.tokens) return [bearerAuth(credentials.tokens, bare())];
  if (credentials.apiKey) return [apiKeyAuth(credentials.apiKey)];
  return [];
}
