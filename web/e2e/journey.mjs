// The buyer's first steps in a real browser (Debian's headless Chromium):
// create a key in the browser, see credits arrive, find a package.
//
// Usage: node journey.mjs BASE_URL SCREENSHOT_DIR
// Prints `KEY <id>` once the key exists (the test then funds it), and
// `DONE` at the end. Any failure exits non-zero with the reason.
import { chromium } from 'playwright-core';

const [base, shots] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on('pageerror', (e) => console.error(`page error: ${e}`));
  await page.goto(`${base}/account`);
  await page.waitForSelector('html[data-hydrated]');
  await page.click('#create-key');
  const id = (await page.textContent('#key-id')).trim();
  console.log(`KEY ${id}`);
  // The test mints credits to the key; the page shows them after a refresh.
  let funded = false;
  for (let i = 0; i < 60 && !funded; i++) {
    await page.click('text=Refresh');
    await page.waitForTimeout(500);
    const figures = (await page.textContent('section[aria-label="Balance"]').catch(() => '')) || '';
    funded = figures.includes('5000');
  }
  if (!funded) throw new Error('the funded balance never showed');
  await page.waitForSelector('text=fund-browser-key'); // the mint, in the history
  await page.screenshot({ path: `${shots}/account-desktop.png`, fullPage: true });
  // The key survives a reload: it lives in the browser.
  await page.reload();
  await page.waitForSelector('#key-id');
  if ((await page.textContent('#key-id')).trim() !== id) throw new Error('the key changed after a reload');
  // Find the mandelbrot package: client-side navigation, then a search.
  await page.click('nav >> text=Packages');
  await page.waitForSelector('#q');
  await page.fill('#q', 'mandel');
  await page.click('button[type=submit]');
  await page.waitForSelector('a[href="/packages/mandelbrot"]');
  await page.click('a[href="/packages/mandelbrot"]');
  await page.waitForSelector('text=agora submit mandelbrot');
  await page.screenshot({ path: `${shots}/journey-package.png`, fullPage: true });
  console.log('DONE');
} finally {
  await browser.close();
}
