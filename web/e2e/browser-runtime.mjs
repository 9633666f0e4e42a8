// The browser runtime in headless Chromium with WebGPU on SwiftShader
// (`--enable-unsafe-webgpu`): runs the cases a test wrote to CASES_FILE on
// the market's /contribute page and writes what the browser computed to
// RESULTS_FILE, for the test to compare with the native host.
//
// Usage: node browser-runtime.mjs BASE_URL CASES_FILE RESULTS_FILE
// Cases: {kernels: [{call, args}], units: [{bundle, input_base64, limits}]}
// Results: {adapter, kernels: [{ok, values, error}], units: [{ok, output_base64, error, report}]}
import { chromium } from 'playwright-core';
import { readFileSync, writeFileSync } from 'node:fs';
import { CHROMIUM_ARGS } from './chromium.mjs';

const [base, casesFile, resultsFile] = process.argv.slice(2);
const cases = JSON.parse(readFileSync(casesFile, 'utf8'));
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: CHROMIUM_ARGS });
try {
  const page = await browser.newPage();
  page.on('pageerror', (e) => console.error(`page error: ${e}`));
  page.on('console', (m) => console.error(`console: ${m.text()}`));
  await page.goto(`${base}/contribute`);
  await page.waitForSelector('html[data-hydrated]');
  const results = await page.evaluate(async (cases) => {
    const rt = await import('/assets/browser/contribute.js');
    const info = await rt.adapterInfo();
    const out = { adapter: info.adapter, jspi: info.jspi, kernels: [], units: [] };
    for (const c of cases.kernels) out.kernels.push(await rt.runKernel(c.call, c.args));
    for (const u of cases.units) {
      const input = Uint8Array.from(atob(u.input_base64), (ch) => ch.charCodeAt(0));
      const r = await rt.runUnit(u.bundle, 'job.js', input, [], u.limits, () => {});
      let output_base64 = null;
      if (r.output) {
        let s = '';
        for (let i = 0; i < r.output.length; i += 0x8000) s += String.fromCharCode(...r.output.subarray(i, i + 0x8000));
        output_base64 = btoa(s);
      }
      out.units.push({ ok: r.ok, output_base64, error: r.error, report: r.report });
    }
    return out;
  }, cases);
  writeFileSync(resultsFile, JSON.stringify(results));
  console.log(`ADAPTER ${JSON.stringify(results.adapter)}`);
} finally {
  await browser.close();
}
