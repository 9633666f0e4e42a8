// The buyer's first steps in a real browser (Debian's headless Chromium):
// create a key in the browser, see credits arrive, find a package.
//
// Usage: node journey.mjs BASE_URL SCREENSHOT_DIR [INPUT_FILE]
// With INPUT_FILE (and providers at the market), it goes on: submit a
// mandelbrot job with that input, watch it finish, see the image, and see
// the refund in the wallet; then submit a job with a bid and a cap no
// provider's ask fits (it stays queued), and cancel it from its page.
// Prints `KEY <id>` once the key exists (the test then funds it), `JOB <id>`
// once submitted, `CANCELLED <id>` once the second job reads cancelled,
// and `DONE` at the end. Any failure exits non-zero.
import { chromium } from 'playwright-core';
import { CHROMIUM_ARGS } from './chromium.mjs';

const [base, shots, input] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: CHROMIUM_ARGS,
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
  await page.waitForSelector('td:text-is("mint")'); // the mint, in the history
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
  if (input) {
    await page.click('text=Submit a job with this package');
    await page.waitForSelector('#inputs');
    await page.setInputFiles('#inputs', input);
    await page.fill('#max-price', '500');
    const escrow = await page.textContent('#escrow');
    if (!escrow.includes('500')) throw new Error(`the escrow shown is wrong: ${escrow}`);
    await page.screenshot({ path: `${shots}/submit-desktop.png`, fullPage: true });
    await page.click('button[type=submit]');
    await page.waitForURL(/\/jobs\/j[0-9a-f]+$/, { timeout: 30000 });
    console.log(`JOB ${page.url().split('/').pop()}`);
    await page.waitForSelector('#job-state.done', { timeout: 90000 });
    await page.waitForSelector('.outputs img', { timeout: 30000 });
    const loaded = await page.$eval('.outputs img', (img) => img.complete && img.naturalWidth > 0);
    if (!loaded) throw new Error('the output image did not load');
    await page.screenshot({ path: `${shots}/job-desktop.png`, fullPage: true });
    await page.click('nav >> text=Account');
    await page.waitForSelector(':text(":refund")', { timeout: 30000 });
    const figures = await page.textContent('section[aria-label="Balance"]');
    console.log(`BALANCE ${figures.replace(/\s+/g, ' ').trim()}`);
    await page.screenshot({ path: `${shots}/wallet-after-job.png`, fullPage: true });
    // A provider that ran the unit, and its charts.
    await page.click('nav >> text=Providers');
    // The provider that ran the unit (a trusted host runs it alone): the
    // row whose last column, units done, is not 0.
    await page.waitForSelector('td a[href^="/providers/"]');
    const ran = await page.$$eval('tr', (rows) => rows
      .filter((r) => r.querySelector('td a[href^="/providers/"]') && r.lastElementChild.textContent.trim() !== '0')
      .map((r) => r.querySelector('td a[href^="/providers/"]').getAttribute('href')));
    if (ran.length === 0) throw new Error('no provider shows the unit it ran');
    await page.click(`td a[href="${ran[0]}"]`);
    await page.waitForSelector('figure.chart svg rect.bar:not([height="0.0"])', { state: 'attached' }); // it ran the unit this hour
    const charts = await page.$$eval('figure.chart svg', (svgs) => svgs.length);
    // Its work's three charts, and its machine's free cores from its
    // heartbeats (GPU charts only where its driver gives readings).
    if (charts < 4) throw new Error(`expected its work's 3 charts and its machine's, saw ${charts}`);
    await page.waitForSelector('figcaption:has-text("Free CPU cores")', { state: 'attached' });
    await page.screenshot({ path: `${shots}/provider-dashboard.png`, fullPage: true });
    // A second job: a bid of 200%, a cap of 3 credits that no provider's
    // ask fits, so it waits; the buyer cancels it from its page.
    await page.goto(`${base}/submit?package=mandelbrot`);
    await page.waitForSelector('html[data-hydrated]');
    await page.setInputFiles('#inputs', input);
    await page.fill('#max-price', '3');
    await page.fill('#bid', '200');
    await page.click('button[type=submit]');
    await page.waitForURL(/\/jobs\/j[0-9a-f]+$/, { timeout: 30000 }).catch(async (e) => {
      throw new Error(`not submitted: ${(await page.textContent('main')).replace(/\s+/g, ' ')}: ${e}`);
    });
    const waiting = page.url().split('/').pop();
    const bid = await page.textContent('#job-bid');
    if (!bid.includes('Bid 200%')) throw new Error(`the job page's bid: ${bid}`);
    page.once('dialog', (dialog) => dialog.accept());
    await page.click('#cancel-job');
    await page.waitForSelector('#job-state.cancelled', { timeout: 30000 });
    console.log(`CANCELLED ${waiting}`);
    await page.screenshot({ path: `${shots}/job-cancelled.png`, fullPage: true });
  }
  console.log('DONE');
} finally {
  await browser.close();
}
