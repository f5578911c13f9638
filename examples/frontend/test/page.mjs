// The example page in headless Chromium (Debian's, driven by playwright-core), against one
// API: `node test/page.mjs <page base URL> <API URL> <key> mock|server`. The page is served
// from another origin than the API, so every call crosses CORS as a real app's would. Exits
// non-zero at the first expectation that fails (scripts/frontend-browser.sh runs it against
// the mock and against `exports-server dev`).

import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const [pageBase, api, key, side] = process.argv.slice(2);
const sandboxed = side === "mock";
/** A generous bound for anything that should happen promptly; never what is tested. */
const PROMPTLY = 60_000;

async function control(path, body) {
  const response = await fetch(`${api}/__mock/${path}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  assert.ok(response.ok, `${path}: ${response.status} ${await response.text()}`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox"],
});
try {
  const page = await browser.newPage({ acceptDownloads: true });
  const errors = [];
  page.on("pageerror", (error) => errors.push(error.message));
  const open = (apiUrl) =>
    page.goto(`${pageBase}/index.html?api=${encodeURIComponent(apiUrl)}&key=${encodeURIComponent(key)}`);
  const state = () => page.$eval("#status", (status) => status.dataset.state ?? "");
  const statusText = () => page.textContent("#status");
  const settled = (states) =>
    page.waitForFunction((states) => states.includes(document.querySelector("#status").dataset.state), states, {
      timeout: PROMPTLY,
    });

  // A bad request: the 400's detail next to its field.
  await open(api);
  await page.fill("#created_after", "2025-13-45");
  await page.click("button[type=submit]");
  const dateError = '[data-error-for="filters.created_after"]';
  await page.waitForFunction((slot) => document.querySelector(slot).textContent !== "", dateError, {
    timeout: PROMPTLY,
  });
  assert.match(await page.textContent(dateError), /2025-13-45/);
  assert.match(await statusText(), /^400: /);

  // An export created, followed until done, and downloaded.
  await page.fill("#created_after", "");
  await page.click("button[type=submit]");
  await settled(["pending", "processing", "done"]);
  if (sandboxed) await control("clock", { advance_seconds: 3600 });
  await settled(["done", "failed"]);
  assert.equal(await state(), "done", await statusText());
  const [download] = await Promise.all([page.waitForEvent("download"), page.click("#download")]);
  assert.match(download.suggestedFilename(), /^users-[0-9a-f-]{36}\.csv$/);
  const file = await (await import("node:fs/promises")).readFile(await download.path(), "utf8");
  assert.match(file.split("\n")[0], /^\uFEFF?id,email,name,status,created_at/);

  if (sandboxed) {
    // A 429 the sandbox makes: the message and when to try again.
    await control("faults", { operation: "createUserExport", status: 429 });
    await page.click("button[type=submit]");
    await page.waitForFunction(() => document.querySelector("#status").textContent.startsWith("429"), null, {
      timeout: PROMPTLY,
    });
    assert.match(await statusText(), /Try again in \d+ s\./);
    // A failed export: its reason.
    await control("failing-exports", { error_message: "The storage is down; create a new export." });
    await page.click("button[type=submit]");
    await settled(["pending", "processing", "failed"]);
    await control("clock", { advance_seconds: 3600 });
    await settled(["failed"]);
    assert.equal(await statusText(), "failed: The storage is down; create a new export.");
    assert.equal(await page.isHidden("#download"), true);
  }

  // An API that is down: a message, not a blank page.
  await open("http://127.0.0.1:1");
  await page.click("button[type=submit]");
  await settled(["unreachable"]);
  assert.match(await statusText(), /could not be reached/);
  assert.deepEqual(errors, [], "no uncaught error on the page");
  console.log(`frontend: the page works against the ${side} at ${api}`);
} finally {
  await browser.close();
}
