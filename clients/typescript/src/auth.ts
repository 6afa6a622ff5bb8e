// Credentials on every call: a bearer token that refreshes itself, or an API key.
import { Code, ConnectError, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { AuthService } from "./gen/soko/auth/v1/auth_pb.js";

/** An access token and, optionally, the refresh token that renews it. */
export class Tokens {
  private refreshing: Promise<void> | undefined;

  constructor(
    public accessToken: string,
    public refreshToken?: string,
    /** Called with each new pair, so an app can store it. */
    public onRefresh?: (accessToken: string, refreshToken: string) => void,
  ) {}

  /** Exchanges the refresh token once, however many calls failed with the old access token at
   * the same time: Soko rotates refresh tokens on use, so a second exchange would fail. */
  async refresh(transport: Transport, stale: string): Promise<boolean> {
    if (this.accessToken !== stale) return true;
    if (!this.refreshToken) return false;
    this.refreshing ??= (async () => {
      try {
        const { tokens } = await createClient(AuthService, transport).refresh({ refreshToken: this.refreshToken });
        if (!tokens) throw new ConnectError("Refresh returned no tokens", Code.Internal);
        this.accessToken = tokens.accessToken;
        this.refreshToken = tokens.refreshToken;
        this.onRefresh?.(tokens.accessToken, tokens.refreshToken);
      } finally {
        this.refreshing = undefined;
      }
    })();
    await this.refreshing;
    return true;
  }
}

/** Sends `authorization: Bearer <access token>`; on UNAUTHENTICATED, refreshes once and retries a
 * unary call. `refreshTransport` reaches the same server without this interceptor. */
export function bearerAuth(tokens: Tokens, refreshTransport: Transport): Interceptor {
  return (next) => async (req) => {
    const used = tokens.accessToken;
    req.header.set("authorization", `Bearer ${used}`);
    try {
      return await next(req);
    } catch (error) {
      const unauthenticated = error instanceof ConnectError && error.code === Code.Unauthenticated;
      if (!unauthenticated || req.stream || !(await tokens.refresh(refreshTransport, used))) throw error;
      req.header.set("authorization", `Bearer ${tokens.accessToken}`);
      return await next(req);
    }
  };
}

/** Sends `x-api-key`: how internal services authenticate (AdminService.CreateApiKey makes keys). */
export function apiKeyAuth(key: string): Interceptor {
  return (next) => (req) => {
    req.header.set("x-api-key", key);
    return next(req);
  };
}
