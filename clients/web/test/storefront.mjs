// The storefront in a real headless Chromium (Debian's, driven by playwright-core), against a real
// server started by the Rust test `web::the_storefront_works_in_a_real_browser`, which passes:
// SOKO_WEB_URL (an allowed origin), SOKO_WEB_URL_DISALLOWED (the same page from an origin that
// SOKO_CORS_ORIGINS does not list), SOKO_SELLER_EMAIL/PASSWORD, SOKO_PHOTO (a demo product's
// photo, of "Ankara wrap dress"), CHROMIUM, and SOKO_SCREENSHOT (where to save the page).
import assert from "node:assert/strict";
import { chromium } from "../../typescript/node_modules/playwright-core/index.mjs";

const env = (name) => process.env[name] ?? assert.fail(`${name} is not set`);
const browser = await chromium.launch({ executablePath: env("CHROMIUM"), args: ["--no-sandbox"] });
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  page.on("pageerror", (e) => console.error("page error:", e));
  await page.goto(env("SOKO_WEB_URL"));
  await page.locator("#status", { hasText: "Ready" }).waitFor({ timeout: 15_000 });
  assert.ok((await page.locator("#products li").count()) >= 10, "the seeded products are listed");

  // Text search.
  await page.fill("#query", "sandals");
  await page.click("#text-search button");
  await page.locator("#status", { hasText: "found" }).waitFor();
  const found = await page.locator("#results li strong").allTextContents();
  assert.ok(found.includes("Leather sandals"), `text search: ${found}`);

  // Photo search: the photo of a demo product finds it first.
  await page.setInputFiles("#photo", env("SOKO_PHOTO"));
  await page.locator("#status", { hasText: "found by photo" }).waitFor();
  assert.equal(await page.locator("#results li strong").first().textContent(), "Ankara wrap dress");

  // A seller signs in and creates a product, which then appears in the list and in search.
  await page.fill("#email", env("SOKO_SELLER_EMAIL"));
  await page.fill("#password", env("SOKO_SELLER_PASSWORD"));
  await page.click("#login button");
  await page.locator("#who", { hasText: "Signed in as" }).waitFor();
  await page.fill("#name", "Kikoy beach towel");
  await page.fill("#price", "1500");
  await page.selectOption("#category", "shoes");
  await page.click("#create button");
  await page.locator("#status", { hasText: "Created Kikoy beach towel" }).waitFor();
  await page.locator("#products li strong", { hasText: "Kikoy beach towel" }).waitFor();
  // The search index follows the outbox: within a few seconds.
  const deadline = Date.now() + 10_000;
  for (;;) {
    await page.fill("#query", "kikoy");
    await page.click("#text-search button");
    await page.locator("#status", { hasText: "found" }).waitFor();
    if ((await page.locator("#results li strong").allTextContents()).includes("Kikoy beach towel")) break;
    assert.ok(Date.now() < deadline, "the new product never appeared in search");
    await page.waitForTimeout(200);
  }
  await page.fill("#query", "sandals");
  await page.click("#text-search button");
  await page.locator("#status", { hasText: "found" }).waitFor();
  await page.screenshot({ path: env("SOKO_SCREENSHOT"), fullPage: true });

  // The same page from an origin the server does not allow: the browser refuses it (CORS).
  const stranger = await browser.newPage();
  await stranger.goto(env("SOKO_WEB_URL_DISALLOWED"));
  await stranger.locator("#status.error", { hasText: "Cannot reach Soko" }).waitFor({ timeout: 15_000 });
  assert.equal(await stranger.locator("#products li").count(), 0);
  console.log("storefront ok");
} finally {
  await browser.close();
}
