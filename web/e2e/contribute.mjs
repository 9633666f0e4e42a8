// A visitor contributes a browser tab's GPU (headless Chromium, WebGPU on
// SwiftShader): open /contribute, see the adapter and the benchmark, press
// Start, and keep the tab open until UNITS units are done; then Pause.
//
// Usage: node contribute.mjs BASE_URL SCREENSHOT_DIR UNITS
// Prints `PROVIDER <id>` once registered and `DONE <units> <earned>` at the end.
import { chromium } from 'playwright-core';
import { CHROMIUM_ARGS } from './chromium.mjs';

const [base, shots, want] = process.argv.slice(2);
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: CHROMIUM_ARGS });
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on('pageerror', (e) => console.error(`page error: ${e}`));
  await page.goto(`${base}/contribute`);
  await page.waitForSelector('html[data-hydrated]');
  await page.waitForSelector('#adapter strong', { timeout: 60000 });
  console.error(`adapter: ${(await page.textContent('#adapter')).trim()}`);
  await page.waitForFunction(() => document.querySelector('#bench')?.textContent.includes('GFLOP/s'), null, { timeout: 120000 });
  console.error((await page.textContent('#bench')).trim());
  await page.click('#start');
  await page.waitForSelector('#provider-link', { timeout: 30000 });
  const href = await page.getAttribute('#provider-link', 'href');
  console.log(`PROVIDER ${href.split('/').pop()}`);
  const deadline = Date.now() + 240000;
  let units = 0;
  while (Date.now() < deadline) {
    units = Number((await page.textContent('#units')).trim());
    if (units >= Number(want)) break;
    await page.waitForTimeout(500);
  }
  await page.screenshot({ path: `${shots}/contribute-desktop.png`, fullPage: true });
  console.error((await page.textContent('#log')).trim());
  if (units < Number(want)) throw new Error(`only ${units} of ${want} units done: ${await page.textContent('#status')}`);
  await page.click('#pause');
  await page.waitForFunction(() => document.querySelector('#status')?.textContent.trim() === 'Paused', null, { timeout: 60000 });
  // Credits show after the market settles each unit; wait for them.
  let earned = 0;
  for (let i = 0; i < 60 && earned === 0; i++) {
    earned = Number((await page.textContent('#earned')).trim());
    if (earned === 0) await page.waitForTimeout(500);
  }
  console.log(`DONE ${units} ${earned}`);
} finally {
  await browser.close();
}
