// The TypeScript client against a real Soko server, run by the Rust integration test
// `clients::the_typescript_client_calls_a_real_server_from_node`, which passes SOKO_URL,
// SOKO_EMAIL, SOKO_PASSWORD (a seller) and SOKO_API_KEY.
import assert from "node:assert/strict";
import { Code } from "@connectrpc/connect";
import { AuthService, CatalogService, createClient, SokoError, Tokens } from "../src/index.js";
import { nodeTransport } from "../src/node.js";

const url = process.env.SOKO_URL!;
const email = process.env.SOKO_EMAIL!;

async function login(): Promise<Tokens> {
  const { tokens } = await createClient(AuthService, nodeTransport(url)).login({
    email,
    password: process.env.SOKO_PASSWORD!,
  });
  return new Tokens(tokens!.accessToken, tokens!.refreshToken);
}

async function main() {
  // A bearer call.
  const tokens = await login();
  const me = await createClient(AuthService, nodeTransport(url, { tokens })).me({});
  assert.equal(me.user?.email, email);

  // An access token that no longer works is refreshed once, for concurrent calls too.
  const stale = await login();
  const refreshed: string[] = [];
  stale.onRefresh = (access) => refreshed.push(access);
  stale.accessToken = "expired-or-revoked";
  const client = createClient(AuthService, nodeTransport(url, { tokens: stale }));
  const both = await Promise.all([client.me({}), client.me({})]);
  assert.deepEqual(
    both.map((r) => r.user?.email),
    [email, email],
  );
  assert.equal(refreshed.length, 1);

  // Bad input: the field violations, decoded.
  const catalog = createClient(CatalogService, nodeTransport(url));
  const error = await catalog.getProduct({ id: "not-an-id" }).then(
    () => assert.fail("not-an-id was accepted"),
    (e: unknown) => SokoError.from(e),
  );
  assert.equal(error.code, Code.InvalidArgument);
  assert.deepEqual(
    error.fieldViolations.map((v) => v.field),
    ["id"],
  );

  // An API key, and the catalog through it.
  const listed = await createClient(CatalogService, nodeTransport(url, { apiKey: process.env.SOKO_API_KEY! })).listProducts({
    pageSize: 10,
  });
  assert.ok(listed.products.length > 0, "the seeded products");
  console.log(`ok: ${listed.products.length} products, refreshed ${refreshed.length} time(s)`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
