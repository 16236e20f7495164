// Drives the console in headless Chromium (Debian's /usr/bin/chromium through playwright-core;
// no browser download) against a live proxy. Started by tests/e2e/test_console.py, which sends
// the traffic first and checks the live config through the API afterwards.
//
//   node web/e2e/console.mjs '<json>'   json: {base, admin_key, viewer_key, completion_id,
//                                        request_id, slug, rollback_to, out_dir}
// Prints one JSON line {"screenshots": [...], "console_errors": [...], "steps": [...]} and
// exits 0, or prints the failing step and exits 1.
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const cfg = JSON.parse(process.argv[2]);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const profile = mkdtempSync(join(tmpdir(), "modelux-console-chromium-"));
mkdirSync(cfg.out_dir, { recursive: true });
const TIMEOUT = 15000;

const shots = [];
const steps = [];
const unexpected = [];  // console errors and page errors outside the bad-key step
let expectErrors = false;
let expectedSeen = [];

function fail(msg) {
  throw new Error(msg);
}

const context = await chromium.launchPersistentContext(profile, {
  executablePath,
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
  viewport: { width: 1280, height: 860 },
});
let code = 0;
try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(TIMEOUT);
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    const e = `${m.text()} @ ${m.location()?.url ?? ""}`;
    (expectErrors ? expectedSeen : unexpected).push(e);
  });
  page.on("pageerror", (e) => unexpected.push(`pageerror: ${e.message}`));

  const shot = async (name) => {
    const path = join(cfg.out_dir, `${String(shots.length + 1).padStart(2, "0")}-${name}.png`);
    await page.screenshot({ path, fullPage: true });
    shots.push(path);
  };
  const step = (s) => steps.push(s);
  const login = async (key) => {
    await page.fill("#key", key);
    await page.click("#login-submit");
  };

  // 1. The login page, and a bad key's clear error.
  await page.goto(cfg.base + "/");
  await page.waitForSelector("#login");
  await shot("login");
  expectErrors = true;  // the 401 of the bad key is logged by Chromium as a failed resource
  await login("mlx-not-a-real-key-000000000");
  await page.waitForSelector("#login-error:not([hidden])");
  const loginErr = await page.textContent("#login-error");
  if (!/Login failed/.test(loginErr) || !/Incorrect API key/.test(loginErr)) fail(`bad key: unclear login error '${loginErr}'`);
  await shot("login-bad-key");
  expectErrors = false;
  if (expectedSeen.some((e) => !/401/.test(e))) fail(`bad key step: unexpected console errors ${JSON.stringify(expectedSeen)}`);
  step(`bad key refused: ${loginErr.trim()}`);

  // 2. Admin: the trace search finds the SDK's request by filters and by its completion id.
  await login(cfg.admin_key);
  await page.waitForSelector("#traces-table");
  await page.waitForSelector("#role");
  const role = await page.textContent("#role");
  if (!/admin/.test(role)) fail(`admin login shows role '${role}'`);
  await shot("traces");
  await page.fill("#f-config", `@${cfg.slug}`);
  await page.selectOption("#f-status", "ok");
  await page.click("#search");
  await page.waitForSelector(`#traces-table tr[data-id="${cfg.request_id}"]`);
  const others = await page.$$eval("#traces-table tbody tr td:nth-child(3)", (tds) => tds.map((t) => t.textContent));
  if (others.some((c) => !c.startsWith(`@${cfg.slug}`))) fail(`config filter leaked other configs: ${others}`);
  step(`filter config=@${cfg.slug} status=ok: ${others.length} rows, includes ${cfg.request_id}`);
  await page.fill("#f-id", cfg.completion_id);
  await page.click("#search");
  await page.waitForFunction(
    (id) => { const rows = document.querySelectorAll("#traces-table tbody tr"); return rows.length === 1 && rows[0].getAttribute("data-id") === id; },
    cfg.request_id,
  );
  await shot("traces-search-by-id");
  step(`search by completion id ${cfg.completion_id} found ${cfg.request_id}`);

  // 3. Its decision view: the attempt timeline with why each attempt started and ended.
  await page.click(`#traces-table a.trace-link`);
  await page.waitForSelector("#attempt-timeline li.attempt");
  const tried = await page.$$eval("#attempt-timeline .why-tried", (els) => els.map((e) => e.textContent));
  const ended = await page.$$eval("#attempt-timeline .why-ended", (els) => els.map((e) => e.textContent));
  if (!tried.length || tried.some((t) => t.endsWith("—")) || ended.some((t) => t.endsWith("—"))) fail(`timeline lacks why: ${tried} / ${ended}`);
  await shot("decision");
  step(`decision view: ${tried.length} attempts: ${tried.map((t, i) => `${t} → ${ended[i]}`).join("; ")}`);
  if (cfg.failover_request_id) {
    await page.goto(`${cfg.base}/#/trace/${cfg.failover_request_id}`);
    await page.waitForFunction(() => document.querySelectorAll("#attempt-timeline li.attempt").length >= 2);
    await shot("decision-failover");
    const t2 = await page.$$eval("#attempt-timeline .attempt", (els) => els.map((e) => e.textContent));
    step(`failover decision view: ${t2.length} attempts`);
  }

  // 4. Spend and latency plots, budgets, health.
  await page.goto(`${cfg.base}/#/plots`);
  await page.waitForSelector("#plot-spend canvas");
  await page.waitForSelector("#plot-latency canvas");
  await page.waitForSelector("#totals");
  const countRows = () => page.$$eval("#totals tbody tr", (trs) => trs.reduce((n, tr) => n + Number(tr.cells[1].textContent), 0));
  const counted = await countRows();
  const note = await page.textContent("#plots > p.muted");
  if (note.startsWith("Computed from")) {
    if (cfg.expected_requests !== undefined && counted !== cfg.expected_requests)
      fail(`plots count ${counted} requests, the API has ${cfg.expected_requests} traces`);
  } else {
    // The proxy has the analytics endpoints: the table must be the server's spend rows.
    const server = await page.evaluate(async (key) => {
      const since = Math.floor(Date.now() / 1000) - 2 * 86400;
      const r = await fetch(`/v1/analytics/spend?by=model&since=${since}`, { headers: { authorization: `Bearer ${key}` } });
      return (await r.json()).rows.reduce((n, row) => n + row.requests, 0);
    }, cfg.admin_key);
    if (counted !== server) fail(`plots count ${counted} requests, /v1/analytics/spend has ${server}`);
  }
  step(`plots: ${counted} requests (${note})`);
  await shot("plots-by-model");
  await page.selectOption("#by", "provider");
  await page.waitForFunction(() => document.querySelector("#totals th")?.textContent === "provider");
  await shot("plots-by-provider");
  step("plots drawn by model and provider");

  // The data module's server path, on answers in the documented shape of the analytics
  // endpoints (GET /v1/analytics/spend with buckets, GET /v1/analytics/latency), served here by
  // the browser itself so the adapter is tested whether or not this proxy has them.
  await page.route("**/openapi.json", async (route) => {
    const res = await route.fetch();
    const doc = await res.json();
    doc.paths["/v1/analytics/spend"] ??= { get: {} };
    doc.paths["/v1/analytics/latency"] ??= { get: {} };
    await route.fulfill({ response: res, json: doc });
  });
  await page.route("**/v1/analytics/spend?*", async (route) => {
    const u = new URL(route.request().url());
    const since = Number(u.searchParams.get("since")), bucket = Number(u.searchParams.get("bucket"));
    const row = { key: "server-model", requests: 7, input_tokens: 0, output_tokens: 0, input_usd: 0, output_usd: 0.5, total_usd: 0.5 };
    const at = new Date((since + 2 * bucket) * 1000).toISOString();
    await route.fulfill({ json: { object: "spend_report", by: u.searchParams.get("by"), bucket_s: bucket, rows: [row], total: row,
                                  buckets: [{ start: at, rows: [row], total: row }] } });
  });
  await page.route("**/v1/analytics/latency?*", (route) =>
    route.fulfill({ json: { object: "latency_report", rows: [{ key: "server-model", count: 7, p50_ms: 12, p95_ms: 34, p99_ms: 40 }] } }));
  await page.goto(`${cfg.base}/#/budgets`);  // a fresh page load: the module reads /openapi.json again
  await page.reload();
  await page.goto(`${cfg.base}/#/plots`);
  await page.waitForFunction(() => /analytics/.test(document.querySelector("#plots > p.muted")?.textContent ?? ""));
  const srv = await page.$$eval("#totals tbody tr", (trs) => trs.map((tr) => [...tr.cells].map((c) => c.textContent)));
  if (JSON.stringify(srv) !== JSON.stringify([["server-model", "7", "0", "$0.5000", "12.0 ms", "34.0 ms"]]))
    fail(`analytics totals not shown as served: ${JSON.stringify(srv)}`);
  await shot("plots-from-analytics");
  await page.unrouteAll();
  await page.reload();
  step("plots from the analytics endpoints' shape: totals and spend buckets taken from the server");
  await page.goto(`${cfg.base}/#/budgets`);
  await page.waitForSelector("#budgets-table");
  const states = await page.$$eval("#budgets-table tbody tr", (trs) => trs.map((tr) => `${tr.cells[0].textContent}=${tr.cells[tr.cells.length - 1].textContent}`));
  if (!states.some((s) => s.endsWith("=alert"))) fail(`no budget in alert state: ${states}`);
  step(`budgets: ${states.join(", ")}`);
  await shot("budgets");
  await page.goto(`${cfg.base}/#/health`);
  await page.waitForSelector("#health-table");
  await shot("health");

  // 5. Configs: diff, replay, and a rollback through the UI.
  await page.goto(`${cfg.base}/#/configs/${cfg.slug}`);
  await page.waitForSelector("#versions-table");
  const liveBefore = await page.textContent("#live-version");
  await page.click(`#versions-table tr[data-version="${cfg.rollback_to}"] button[data-action="diff-live"]`);
  await page.waitForSelector("#diff");
  await shot("config-diff");
  await page.click(`#versions-table tr[data-version="${cfg.rollback_to}"] button[data-action="replay"]`);
  await page.waitForSelector("#replay-report");
  await shot("config-replay");
  step("diff and replay shown");
  await page.click(`#versions-table tr[data-version="${cfg.rollback_to}"] button[data-action="rollback"]`);
  await page.fill("#rollback-message", "rolled back by the console e2e test");
  await page.click("#confirm-rollback");
  await page.waitForSelector("#rollback-done");
  await page.waitForFunction((before) => document.querySelector("#live-version")?.textContent !== before, liveBefore);
  const liveAfter = await page.textContent("#live-version");
  await shot("config-rolled-back");
  step(`rollback through the UI: ${liveBefore} → ${liveAfter}`);

  // 6. A viewer sees every page and no write control.
  await page.click("#logout");
  await page.waitForSelector("#login");
  await login(cfg.viewer_key);
  await page.waitForSelector("#traces-table");
  if (!/viewer/.test(await page.textContent("#role"))) fail("viewer login does not show the viewer role");
  await page.goto(`${cfg.base}/#/configs/${cfg.slug}`);
  await page.waitForSelector("#versions-table");
  await page.waitForSelector("#read-only");
  const writes = await page.$$("button.write, button[data-action=rollback], button[data-action=replay]");
  if (writes.length) fail(`viewer sees ${writes.length} write controls`);
  await shot("viewer-configs");
  for (const p of ["plots", "budgets", "health"]) {
    await page.goto(`${cfg.base}/#/${p}`);
    await page.waitForSelector(`#page-${p}`);
    await page.waitForLoadState("networkidle");
  }
  await shot("viewer-health");
  step("viewer: read-only, no write controls");

  if (unexpected.length) fail(`console errors: ${JSON.stringify(unexpected)}`);
  console.log(JSON.stringify({ screenshots: shots, console_errors: unexpected, steps }));
} catch (e) {
  console.log(JSON.stringify({ error: String(e.stack ?? e), screenshots: shots, console_errors: unexpected, steps }));
  code = 1;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(code);
