// The storefront page: lists products, searches by text and by photo, and lets a seller sign in
// and add a product, all through the TypeScript client over grpc-web.
import {
  AuthService,
  CatalogService,
  SearchService,
  SokoError,
  Tokens,
  createClient,
  type catalog,
} from "../typescript/src/index.js";
import { webTransport } from "../typescript/src/web.js";

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

function status(text: string, error = false) {
  const el = $("status");
  el.textContent = text;
  el.className = error ? "error" : "";
}

function explain(e: unknown): string {
  const error = SokoError.from(e);
  const fields = error.fieldViolations.map((v) => `${v.field}: ${v.description}`).join("; ");
  return fields ? `${error.rawMessage} (${fields})` : error.rawMessage || error.message;
}

function show(list: HTMLElement, products: (catalog.Product | undefined)[]) {
  list.replaceChildren(
    ...products
      .filter((p): p is catalog.Product => !!p)
      .map((p) => {
        const item = document.createElement("li");
        item.dataset.id = p.id;
        const name = document.createElement("strong");
        name.textContent = p.name;
        const price = document.createElement("div");
        price.className = "price";
        price.textContent = p.price ? `${p.price.currencyCode} ${(Number(p.price.amountMinor) / 100).toFixed(2)}` : "";
        item.append(name, price);
        return item;
      }),
  );
}

async function main() {
  const { grpcUrl } = (await (await fetch("config.json")).json()) as { grpcUrl: string };
  const anonymous = webTransport(grpcUrl);
  const catalogClient = createClient(CatalogService, anonymous);
  const search = createClient(SearchService, anonymous);

  async function listProducts() {
    const { products } = await catalogClient.listProducts({ pageSize: 50 });
    show($("products"), products);
  }

  $("text-search").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const { results } = await search.searchProducts({ query: $<HTMLInputElement>("query").value });
      show($("results"), results.map((r) => r.product));
      status(`${results.length} found`);
    } catch (e) {
      status(explain(e), true);
    }
  });

  $("photo").addEventListener("change", async () => {
    const file = $<HTMLInputElement>("photo").files?.[0];
    if (!file) return;
    try {
      const image = new Uint8Array(await file.arrayBuffer());
      const { results } = await search.searchByImage({ image, topK: 5 });
      show($("results"), results.map((r) => r.product));
      status(`${results.length} found by photo`);
    } catch (e) {
      status(explain(e), true);
    }
  });

  let sellerCatalog: ReturnType<typeof createClient<typeof CatalogService>> | undefined;
  let sellerId = "";
  $("login").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const email = $<HTMLInputElement>("email").value;
      const { tokens, user } = await createClient(AuthService, anonymous).login({
        email,
        password: $<HTMLInputElement>("password").value,
      });
      const session = new Tokens(tokens!.accessToken, tokens!.refreshToken);
      sellerCatalog = createClient(CatalogService, webTransport(grpcUrl, { tokens: session }));
      // A seller's shop: the one this browser opened before, or a new one.
      const key = `soko.seller.${user!.id}`;
      sellerId = localStorage.getItem(key) ?? "";
      if (!sellerId) {
        const { seller } = await sellerCatalog.createSeller({ displayName: `Shop of ${email.split("@")[0]}` });
        sellerId = seller!.id;
        localStorage.setItem(key, sellerId);
      }
      const { categories } = await catalogClient.listCategories({});
      $("category").replaceChildren(
        ...categories.map((c) => Object.assign(document.createElement("option"), { value: c.id, textContent: c.displayName })),
      );
      $("create").hidden = false;
      $("who").textContent = `Signed in as ${email}`;
      status("Signed in");
    } catch (e) {
      status(explain(e), true);
    }
  });

  $("create").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const { product } = await sellerCatalog!.createProduct({
        product: {
          name: $<HTMLInputElement>("name").value,
          description: $<HTMLInputElement>("name").value,
          price: { amountMinor: BigInt(Math.round(Number($<HTMLInputElement>("price").value) * 100)), currencyCode: "KES" },
          categoryId: $<HTMLSelectElement>("category").value,
          sellerId,
          status: 2, // PRODUCT_STATUS_ACTIVE
        },
      });
      status(`Created ${product!.name}`);
      await listProducts();
    } catch (e) {
      status(explain(e), true);
    }
  });

  try {
    await listProducts();
    status("Ready");
  } catch (e) {
    // A page on an origin the server does not allow sees only a failed fetch (CORS).
    status(`Cannot reach Soko: ${explain(e)}`, true);
  }
}

void main();
