// The live DOTS view in the editor, in Debian's Chromium: the DOTS sidebar tab is there with no
// endpoints, shows the session and the mitigation of a real loopback call home once a mitigation is
// sent, Approve in the tab enforces the block and the ISP sees status 2. The home's name (the PSK
// identity the peer sends) and the endpoint's name are full of markup: shown as text, never run.
// Screenshots go to test/artifacts/live-view-*.png.
import { strict as assert } from "node:assert";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import type { BrowserContext, Page } from "playwright-core";
import { hasCommand, requireOrSkip } from "../support/env";
import { repoRoot } from "../support/paths";
import { freePort } from "../support/ports";
import { startNodeRed, type NodeRedProcess } from "./nr-process";
import { liveFlow, type LiveRec } from "./live-flow";

const CHROMIUM = "/usr/bin/chromium";
const artifacts = path.join(repoRoot(), "test", "artifacts");
const HOME = "<img/src=x/onerror=window.__dotsXss=1>home-1";
const ISP_NAME = '<b id="dots-injected">ISP</b> edge';

describe("live DOTS view in the editor (Chromium)", function () {
  this.timeout(90000);
  let tmp = "";
  let nr: NodeRedProcess | undefined;
  let context: BrowserContext | undefined;
  let page: Page;
  const pageErrors: string[] = [];
  const consoleErrors: string[] = [];

  before(async function () {
    requireOrSkip(this, "Debian's chromium at /usr/bin/chromium", hasCommand(CHROMIUM));
    fs.mkdirSync(artifacts, { recursive: true });
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), "dots-live-editor-"));
    nr = await startNodeRed(tmp);
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { chromium } = require("playwright-core") as typeof import("playwright-core");
    context = await chromium.launchPersistentContext(path.join(tmp, "chromium-profile"), {
      executablePath: CHROMIUM,
      headless: true,
      args: [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
      ],
      viewport: { width: 1400, height: 1200 },
    });
    await context.route("**/*", (route) =>
      route.request().url().startsWith(nr!.url) || route.request().url().startsWith("data:") ? route.continue() : route.abort(),
    );
    page = context.pages()[0] ?? (await context.newPage());
    page.on("pageerror", (e) => pageErrors.push(e.stack ?? e.message));
    page.on("console", (m) => {
      if (m.type() === "error") consoleErrors.push(m.text());
    });
    page.on("dialog", (d) => void d.dismiss());
    await page.goto(nr.url);
    await page.waitForSelector(`.red-ui-palette-node[data-palette-type="dots-call-home-listener"]`, { timeout: 30000 });
  });

  after(async () => {
    await context?.close().catch(() => undefined);
    await nr?.stop();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  const live = (): ReturnType<Page["locator"]> => page.locator(".dots-live");
  const shot = (name: string): Promise<Buffer> => live().screenshot({ path: path.join(artifacts, `live-view-${name}.png`) });

  it("the DOTS tab is in the sidebar and says that nothing runs yet", async () => {
    await page.waitForSelector("#red-ui-tab-dots-live-view", { state: "attached" });
    // Shown the way a user picks it (the tab bar or its menu); RED.sidebar.show does the same.
    await page.evaluate(() => (window as any).RED.sidebar.show("dots-live-view")); // eslint-disable-line @typescript-eslint/no-explicit-any
    await page.waitForSelector(".dots-live", { state: "visible" });
    await page.waitForFunction(() => /Updated/.test(document.querySelector(".dots-live-state")?.textContent ?? ""));
    const text = await live().innerText();
    assert.match(text, /No ISP endpoint is running/);
    assert.match(text, /No home endpoint is running/);
    assert.match(text, /No filter-action node is running/);
    await page.click(".dots-live-help-toggle");
    assert.match(await live().innerText(), /dots-call-home\.read/);
    await shot("empty");
    await page.click(".dots-live-help-toggle");
  });

  it("shows the session and, after a mitigation, both sides' mitigations and the consent; Approve blocks and the ISP gets status 2", async () => {
    const port = await freePort();
    const res = await fetch(nr!.url + "flows", {
      method: "POST",
      headers: { "content-type": "application/json", "Node-RED-Deployment-Type": "full" },
      body: JSON.stringify(liveFlow(port, { home: HOME, ispName: ISP_NAME, deadPort: await freePort() })),
    });
    assert.equal(res.status, 204, await res.text());
    const session = page.locator(".dots-live-session");
    await session.first().waitFor({ timeout: 20000 });
    assert.ok((await session.first().innerText()).includes(HOME), "the home name is shown as text");
    assert.match(await session.first().innerText(), /DTLS/);
    await page.waitForFunction(() => /connected to 127\.0\.0\.1/.test(document.querySelector(".dots-live")?.textContent ?? ""));
    assert.ok((await live().innerText()).includes(ISP_NAME), "the endpoint name is shown as text");
    await shot("session");

    assert.equal((await fetch(nr!.url + "inject/go1", { method: "POST" })).status, 200);
    await page.locator("tr.dots-live-pending").first().waitFor({ timeout: 20000 });
    await page.locator("tr.dots-live-isp-mitigation").first().waitFor();
    await page.locator("tr.dots-live-home-mitigation").first().waitFor();
    assert.match(await page.locator("tr.dots-live-isp-mitigation").first().innerText(), /attack-mitigation-in-progress/);
    assert.match(await page.locator("tr.dots-live-pending").first().innerText(), /192\.168\.1\.20/);
    assert.match(await live().innerText(), /Nothing blocked/);
    await shot("pending");

    await page.click("tr.dots-live-pending .dots-live-approve");
    await page.locator("tr.dots-live-block").first().waitFor({ timeout: 20000 });
    assert.match(await page.locator("tr.dots-live-block").first().innerText(), /block\s+192\.168\.1\.20/);
    assert.equal(await page.locator("tr.dots-live-pending").count(), 0);
    await page.waitForFunction(
      () => /attack-successfully-mitigated/.test(document.querySelector("tr.dots-live-isp-mitigation")?.textContent ?? ""),
      undefined,
      { timeout: 20000 },
    );
    const answers = (await (await fetch(nr!.url + "api/dots-test/state")).json()) as LiveRec[];
    assert.ok(
      answers.some((a) => a.topic === "status" && a.statusCode === 2),
      JSON.stringify(answers),
    );
    // The second home dials where no ISP listens: not connected, and its failures are listed.
    await page.locator("tr.dots-live-error").first().waitFor({ timeout: 20000 });
    assert.match(await page.locator("tr.dots-live-error").first().innerText(), /second home \(no ISP there\)/);
    assert.match(await live().innerText(), /not connected/);
    await shot("approved");
    await page.screenshot({ path: path.join(artifacts, "live-view-editor.png") });

    assert.equal(await page.evaluate(() => (window as any).__dotsXss), undefined, "no markup from a peer ran"); // eslint-disable-line @typescript-eslint/no-explicit-any
    assert.equal(await page.locator("#dots-injected").count(), 0, "no markup from a name became an element");
    assert.equal(await page.locator(".dots-live img").count(), 0);
  });

  it("many sessions: rows are capped with a count of the rest (a fabricated snapshot of 300 homes, named as such)", async () => {
    const now = new Date().toISOString();
    const sessions = Array.from({ length: 100 }, (_, i) => ({
      id: `s${i}`,
      home: `home-${i}`,
      identity: `home-${i}`,
      transport: "dtls",
      remote: `192.0.2.${i % 250}:4000`,
      cipher: "TLS_PSK_WITH_AES_128_CCM_8",
      since: now,
      heartbeatsIn: i,
      heartbeatsOut: i,
    }));
    const fake = {
      time: now,
      isp: [{ id: "x", name: "big ISP", sessions: { total: 300, rows: sessions }, mitigations: { total: 0, rows: [] } }],
      home: [],
      filters: [],
      errors: [],
    };
    await page.route("**/dots-call-home/live?*", (route) =>
      route.fulfill({ status: 200, contentType: "application/json", body: JSON.stringify(fake) }),
    );
    await page.waitForFunction(() => /big ISP/.test(document.querySelector(".dots-live")?.textContent ?? ""), undefined, {
      timeout: 10000,
    });
    assert.equal(await page.locator(".dots-live-session").count(), 50);
    assert.match(await live().innerText(), /250 more not shown \(300 in all\)/);
    await page.unroute("**/dots-call-home/live?*");
  });

  it("no page errors or console errors", () => {
    assert.deepEqual(pageErrors, []);
    assert.deepEqual(consoleErrors, []);
  });
});
