// The browser test of web/ (run by web/test): serves web/dist on 127.0.0.1, opens it in headless
// Chromium (its WebGPU adapter, SwiftShader where there is no GPU), and checks the page against
// `perplex ppl` on the same texts:
// - the default model on its held-out text: bits per byte within 1e-5 relative of the CLI's;
// - a malformed model file shows the CLI's error message, and the page still scores after it;
// - with PERPLEX_ASSETS, the SmolLM2 Q4_1 GGUF on a short text, within 1e-5 relative.
// Usage: node web/test.mjs EXPECTED.json [SCREENSHOT.png]; EXPECTED.json holds
// {"default": <ppl --json of the held-out text>, "broken": <the CLI's error line>,
//  "gguf": {"path", "text", "expected": <ppl --json>} (optional)}.
import { chromium } from "playwright-core";
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { extname, join, normalize } from "node:path";

const [expectedPath, screenshot] = process.argv.slice(2);
const expected = JSON.parse(await readFile(expectedPath, "utf8"));
const root = new URL("dist/", import.meta.url).pathname;
const types = { ".html": "text/html", ".js": "text/javascript", ".wasm": "application/wasm", ".json": "application/json", ".txt": "text/plain" };

const server = createServer(async (request, response) => {
  const path = normalize(decodeURIComponent(new URL(request.url, "http://x").pathname)).replace(/^\/+/, "") || "index.html";
  try {
    const body = await readFile(join(root, path));
    response.writeHead(200, { "content-type": types[extname(path)] || "application/octet-stream" });
    response.end(body);
  } catch {
    response.writeHead(404);
    response.end();
  }
});
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const url = `http://127.0.0.1:${server.address().port}/`;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless=new", "--no-sandbox", "--enable-unsafe-webgpu", "--disable-gpu-sandbox", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-quic"],
});
let failures = 0;
function check(condition, message) {
  console.log(`${condition ? "ok  " : "FAIL"} ${message}`);
  if (!condition) failures += 1;
}
function relative(got, want) {
  return Math.abs(got - want) / Math.abs(want);
}

try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  page.on("console", (m) => console.log(`  page: ${m.text()}`));
  page.on("pageerror", (e) => console.log(`  page error: ${e.message}`));
  await page.goto(url);
  await page.waitForSelector("body[data-ready=yes]", { timeout: 60_000 });

  const scoreText = async (text) => {
    await page.evaluate(() => { window.perplexResult = undefined; });
    if (text !== undefined) await page.fill("#text", text);
    await page.click("#score");
    await page.waitForFunction(() => window.perplexResult || document.getElementById("error").textContent, null, { timeout: 900_000 });
    return page.evaluate(() => window.perplexResult || { error: document.getElementById("error").textContent });
  };
  const loaded = () => page.waitForFunction(() => {
    const s = document.getElementById("status").textContent;
    return s === "Model loaded." || document.getElementById("error").textContent;
  }, null, { timeout: 300_000 });

  // The default model on its held-out text.
  await page.click("#use-default");
  await loaded();
  const adapter = await page.textContent("#adapter");
  console.log(`  ${adapter}`);
  const result = await scoreText();
  check(!result.error, `the default model scores its held-out text${result.error ? `: ${result.error}` : ""}`);
  if (!result.error) {
    const want = expected.default.total;
    const shown = Number(await page.textContent("#bits-per-byte"));
    console.log(`  bits per byte: page ${result.total.bits_per_byte}, perplex ppl ${want.bits_per_byte}`);
    console.log(`  ${result.total.tokens} tokens: page ${result.seconds.toFixed(2)} s, perplex ppl ${expected.default.seconds.toFixed(2)} s (${expected.default.adapter})`);
    check(result.total.tokens === want.tokens && result.total.bytes === want.bytes, "the same tokens and bytes as perplex ppl");
    check(relative(result.total.bits_per_byte, want.bits_per_byte) <= 1e-5, "bits per byte within 1e-5 relative of perplex ppl");
    check(relative(shown, want.bits_per_byte) <= 1e-5, "the page shows that bits per byte");
    check(relative(result.total.token_perplexity, want.token_perplexity) <= 1e-5, "token perplexity within 1e-5 relative");
    check(await page.locator("#tokens span").count() === want.tokens, "one coloured span per scored token");
    if (screenshot) await page.screenshot({ path: screenshot, fullPage: false });
  }

  // A malformed file: the CLI's message, and the page keeps working.
  await page.setInputFiles("#model-files", [{ name: "broken.gguf", mimeType: "application/octet-stream", buffer: Buffer.from("GGUF but not really") }]);
  await page.waitForFunction(() => document.getElementById("error").textContent, null, { timeout: 60_000 });
  const shownError = await page.textContent("#error");
  console.log(`  error shown: ${shownError}`);
  check(shownError.trim() === expected.broken, "a malformed file shows the CLI's error message");
  const again = await scoreText("The page still works after a bad file.");
  check(!again.error && again.total.tokens > 0, "the page still scores with the model it had");

  // The SmolLM2 Q4_1 GGUF, where the assets are.
  if (expected.gguf) {
    await page.setInputFiles("#model-files", expected.gguf.path);
    await loaded();
    const gguf = await scoreText(expected.gguf.text);
    check(!gguf.error, `the Q4_1 GGUF scores a short text${gguf.error ? `: ${gguf.error}` : ""}`);
    if (!gguf.error) {
      const want = expected.gguf.expected.total;
      console.log(`  GGUF bits per byte: page ${gguf.total.bits_per_byte}, perplex ppl ${want.bits_per_byte}`);
      console.log(`  ${gguf.total.tokens} tokens: page ${gguf.seconds.toFixed(2)} s, perplex ppl ${expected.gguf.expected.seconds.toFixed(2)} s`);
      check(gguf.total.tokens === want.tokens, "the GGUF's tokens are perplex ppl's");
      check(relative(gguf.total.bits_per_byte, want.bits_per_byte) <= 1e-5, "GGUF bits per byte within 1e-5 relative of perplex ppl");
    }
  } else {
    console.log("note: PERPLEX_ASSETS is not set: the SmolLM2 GGUF check is skipped");
  }
} finally {
  await browser.close();
  server.close();
}
console.log(failures ? `web test: ${failures} failed` : "web test: all passed");
process.exit(failures ? 1 : 0);
