// The page tests in Firefox (SPEC section 6): Debian's firefox-esr driven by
// puppeteer-core over WebDriver BiDi. The same checks as page.test.mjs's Chromium
// run: upload to a live card, a refusal shown as a sentence, the viewer, the
// per-upload options, the phone layout and a feed that resumes where it left off.
//
//   FACES_BIN      faces binary (default ../../target/debug/faces)
//   FIREFOX_PATH   Firefox executable (default /usr/bin/firefox-esr)
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import puppeteer from 'puppeteer-core';
import { DATA_DIR, ERR_INVALID_IMAGE, startFaces, uploadFile } from './faces-server.mjs';

const FIREFOX = process.env.FIREFOX_PATH || '/usr/bin/firefox-esr';
const TWO_PEOPLE = path.join(DATA_DIR, 'known_counts', 'fr_two_people.jpg');
const NOT_AN_IMAGE = path.join(DATA_DIR, 'edge', 'files', 'not_an_image.jpg');
const STEP_MS = 30_000;

let server;
let browser;

before(async () => {
  assert.ok(existsSync(FIREFOX), `Firefox not found at ${FIREFOX} (apt install firefox-esr)`);
  server = await startFaces();
  browser = await puppeteer.launch({
    browser: 'firefox',
    executablePath: FIREFOX,
    headless: true,
    protocol: 'webDriverBiDi',
    timeout: 60_000,
  });
});

after(async () => {
  if (browser) await browser.close();
  if (server) await server.stop();
});

async function newPage(viewport = { width: 1280, height: 900 }) {
  const context = await browser.createBrowserContext();
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_MS);
  await page.setViewport(viewport);
  const pageErrors = [];
  page.on('pageerror', (err) => pageErrors.push(err));
  await page.goto(`${server.url}/`, { waitUntil: 'domcontentloaded' });
  await page.waitForFunction(() => document.querySelector('#feed-status')?.dataset.state === 'live');
  return { page, pageErrors, close: () => context.close() };
}

// Chooses `file` in the page's input; resolves with the id of the upload row once
// the server has answered (or null for a refusal).
async function chooseFile(page, file) {
  const rowsBefore = await page.$$eval('#uploads li', (lis) => lis.length);
  const input = await page.$('#file-input');
  await input.uploadFile(file);
  await page.waitForFunction(
    (n) => {
      const rows = document.querySelectorAll('#uploads li');
      const row = rows[0];
      return rows.length > n && row && ['processing', 'done', 'error'].includes(row.dataset.state);
    },
    {},
    rowsBefore,
  );
  return page.$eval('#uploads li', (li) => li.dataset.id || null);
}

const textOf = (page, selector) => page.$eval(selector, (e) => e.textContent);

describe('web page in Firefox', () => {
  test('desktop: live feed, upload, gallery card, error, viewer', async (t) => {
    const { page, pageErrors, close } = await newPage();
    t.after(close);

    const id = await chooseFile(page, TWO_PEOPLE);
    assert.match(id, /^[0-9a-f-]{36}$/);
    const card = `#gallery .card[data-id="${id}"]`;
    await page.waitForFunction(
      (sel) => document.querySelector(`${sel} .count`)?.textContent === '2 faces',
      {},
      card,
    );
    assert.equal(await page.$eval('#gallery .card', (c) => c.dataset.id), id, 'newest first');
    await page.waitForFunction(
      (sel) => { const i = document.querySelector(`${sel} img`); return i && i.complete && i.naturalWidth > 0; },
      {},
      card,
    );

    // A refusal is shown as the SPEC's sentence, and makes no card.
    const cards = await page.$$eval('#gallery .card', (c) => c.length);
    await chooseFile(page, NOT_AN_IMAGE);
    await page.waitForFunction((msg) => document.querySelector('#errors').textContent.includes(msg), {}, ERR_INVALID_IMAGE);
    assert.equal(await page.$$eval('#gallery .card', (c) => c.length), cards);

    // The viewer: one box per face; Escape closes it.
    await page.click(card);
    await page.waitForFunction(() => document.querySelector('#viewer').open);
    await page.waitForFunction(() => document.querySelectorAll('#viewer .box').length === 2);
    assert.match(await textOf(page, '#viewer-title'), /2 faces/);
    await page.keyboard.press('Escape');
    await page.waitForFunction(() => !document.querySelector('#viewer').open);
    assert.deepEqual(pageErrors.map(String), [], 'uncaught errors in the page');
  });

  test('options: the mode and minimum score chosen on the page go with the upload', async (t) => {
    const { page, pageErrors, close } = await newPage();
    t.after(close);
    await page.select('#mode-input', 'accurate');
    await page.type('#threshold-input', '0.3');
    const id = await chooseFile(page, TWO_PEOPLE);
    const shown = await (await fetch(`${server.url}/image/${id}`)).json();
    assert.equal(shown.mode, 'accurate');
    assert.equal(shown.threshold, 0.3);
    assert.deepEqual(pageErrors.map(String), [], 'uncaught errors in the page');
  });

  test('phone: recent results on load, nothing wider than the screen', async (t) => {
    const { page, pageErrors, close } = await newPage({ width: 390, height: 844, isMobile: true, hasTouch: true });
    t.after(close);
    await page.waitForSelector('#gallery .card');
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `page is ${overflow}px wider than the 390px viewport`);
    assert.deepEqual(pageErrors.map(String), [], 'uncaught errors in the page');
  });

  test('the feed resumes after the last seq it saw: events while away are not lost', async (t) => {
    const { page, pageErrors, close } = await newPage();
    t.after(close);
    // One event, so the page knows a seq.
    const first = await chooseFile(page, TWO_PEOPLE);
    await page.waitForSelector(`#gallery .card[data-id="${first}"]`);
    // Cut the page's feed, upload while it is away, and let it reconnect.
    await page.evaluate(() => {
      window.__realWebSocket = window.WebSocket;
      // A socket that cannot connect: closes at once, as when the network is down.
      window.WebSocket = function Offline() {
        const socket = { close() {} };
        setTimeout(() => socket.onclose && socket.onclose(), 10);
        return socket;
      };
    });
    await page.evaluate(() => feed.close());
    await page.waitForFunction(() => document.querySelector('#feed-status').dataset.state !== 'live');
    const r = await uploadFile(server.url, 'known_counts/fr_kit_with_rose.jpg', { headers: { Accept: 'application/json' } });
    assert.equal(r.status, 202);
    const missed = (await r.json()).id;
    // Wait until it is done on the server, so only a replay can bring it.
    for (let i = 0; i < 300; i += 1) {
      const s = await (await fetch(`${server.url}/image/${missed}`)).json();
      if (s.status === 'done') break;
      await new Promise((res) => setTimeout(res, 100));
    }
    await page.evaluate(() => { window.WebSocket = window.__realWebSocket; });
    await page.waitForSelector(`#gallery .card[data-id="${missed}"]`, { timeout: 40_000 });
    assert.deepEqual(pageErrors.map(String), [], 'uncaught errors in the page');
  });
});
