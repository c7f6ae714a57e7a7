// End-to-end tests of the web page (SPEC section 6) in a real headless Chromium,
// plus the no-JavaScript form-post path.
//
//   FACES_BIN        faces binary (default ../../target/debug/faces)
//   CHROMIUM_PATH    Chromium executable (default /usr/bin/chromium)
//   FACES_SCREENSHOT_DIR  where desktop.png / phone.png go (default docs/screenshots)
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { DATA_DIR, ERR_INVALID_IMAGE, REPO_ROOT, startFaces, uploadFile } from './faces-server.mjs';

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const SHOTS = path.resolve(process.env.FACES_SCREENSHOT_DIR || path.join(REPO_ROOT, 'docs', 'screenshots'));
const TWO_PEOPLE = path.join(DATA_DIR, 'known_counts', 'fr_two_people.jpg');
const NOT_AN_IMAGE = path.join(DATA_DIR, 'edge', 'files', 'not_an_image.jpg');
const STEP_MS = 20_000; // deadline for any one thing the page must do

const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

let server;
const browsers = [];

/**
 * One Chromium per call, each with a fresh --user-data-dir in a temp dir
 * (Playwright takes the profile dir as launchPersistentContext's argument and
 * passes it as --user-data-dir). Context options: viewport, isMobile, ….
 */
async function launch(contextOptions = {}) {
  const userDataDir = await mkdtemp(path.join(tmpdir(), 'faces-e2e-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: CHROMIUM_ARGS,
    timeout: 30_000,
    ...contextOptions,
  });
  context.setDefaultTimeout(STEP_MS);
  const entry = {
    context,
    close: async () => {
      await context.close().catch(() => {});
      await rm(userDataDir, { recursive: true, force: true, maxRetries: 3 });
    },
  };
  browsers.push(entry);
  const page = context.pages()[0] || (await context.newPage());
  // Uncaught exceptions in the page fail the test that owns the page.
  const pageErrors = [];
  page.on('pageerror', (err) => pageErrors.push(err));
  return { context, page, pageErrors, close: entry.close };
}

async function openPage(page) {
  const resp = await page.goto(`${server.url}/`, { waitUntil: 'domcontentloaded' });
  assert.equal(resp.status(), 200);
  await page.locator('#feed-status', { hasText: /^live$/ }).waitFor({ state: 'visible' });
  assert.equal(await page.locator('#feed-status').getAttribute('data-state'), 'live');
}

// Upload one file through the page's file input; resolve with the 202 body
// (or { status, body } for a refused upload).
async function uploadViaInput(page, file) {
  const [resp] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === '/image/'),
    page.locator('#file-input').setInputFiles(file),
  ]);
  let body = null;
  try { body = await resp.json(); } catch { /* not JSON */ }
  return { status: resp.status(), body };
}

// Every <img> in the selector has loaded (decoded, non-zero size).
async function waitImagesLoaded(page, selector) {
  await page.waitForFunction(
    (sel) => {
      const imgs = [...document.querySelectorAll(sel)];
      return imgs.length > 0 && imgs.every((i) => i.complete && i.naturalWidth > 0);
    },
    selector,
    { timeout: STEP_MS },
  );
}

before(async () => {
  await mkdir(SHOTS, { recursive: true });
  server = await startFaces();
});

after(async () => {
  for (const b of browsers) await b.close();
  if (server) await server.stop();
});

describe('web page in Chromium', () => {
  let uploadedId; // the card the phone test expects to find on load

  test('desktop: live feed, upload, gallery card, error, viewer', async (t) => {
    const { page, pageErrors, close } = await launch({ viewport: { width: 1280, height: 900 } });
    t.after(close);

    await openPage(page);
    const cardsBefore = await page.locator('#gallery .card').count();

    // 1. A photo with two faces becomes a card saying "2 faces".
    const ok = await uploadViaInput(page, TWO_PEOPLE);
    assert.equal(ok.status, 202, `upload answered ${ok.status} ${JSON.stringify(ok.body)}`);
    assert.match(ok.body.id, /^[0-9a-f-]{36}$/);
    uploadedId = ok.body.id;
    const card = page.locator(`#gallery .card[data-id="${uploadedId}"]`);
    await card.waitFor({ state: 'visible' });
    await assert.doesNotReject(
      card.locator('.count', { hasText: /^2 faces$/ }).waitFor({ state: 'visible' }),
      'the new card should say "2 faces"',
    );
    assert.equal(await page.locator('#gallery .card').count(), cardsBefore + 1);
    // The newest card comes first.
    assert.equal(await page.locator('#gallery .card').first().getAttribute('data-id'), uploadedId);
    await waitImagesLoaded(page, `#gallery .card[data-id="${uploadedId}"] img`);
    // The page's own upload row settles too.
    await page.locator(`#uploads li[data-id="${uploadedId}"][data-state="done"]`, { hasText: '2 faces found' })
      .waitFor({ state: 'visible' });
    await page.screenshot({ path: path.join(SHOTS, 'desktop.png') });

    // 2. Text named .jpg is refused with the SPEC's sentence, shown in #errors.
    const bad = await uploadViaInput(page, NOT_AN_IMAGE);
    assert.equal(bad.status, 400);
    assert.deepEqual(bad.body, { image: [ERR_INVALID_IMAGE] });
    const errors = page.locator('#errors');
    await errors.getByText(ERR_INVALID_IMAGE, { exact: false }).waitFor({ state: 'visible' });
    assert.ok((await errors.textContent()).includes(ERR_INVALID_IMAGE));
    // No card for a refused upload.
    assert.equal(await page.locator('#gallery .card').count(), cardsBefore + 1);

    // 3. Clicking the card opens the viewer with one box per face; Escape closes it.
    const viewer = page.locator('#viewer');
    assert.equal(await viewer.evaluate((d) => d.open), false);
    await card.click();
    await viewer.waitFor({ state: 'visible' });
    assert.equal(await viewer.evaluate((d) => d.open), true);
    await page.locator('#viewer .box').nth(1).waitFor({ state: 'attached' });
    assert.equal(await page.locator('#viewer .box').count(), 2);
    await expectText(page.locator('#viewer-title'), '2 faces');
    await waitImagesLoaded(page, '#viewer-img');

    // 4. "This is Anna": click a box, type the name; the box then shows it, and the
    // server has the subject with that face as its example.
    const name = `Person ${Date.now()}`;
    await page.locator('#viewer .box').first().click();
    await page.locator('#name-form').waitFor({ state: 'visible' });
    await expectText(page.locator('#name-label'), 'Who is face 1?');
    await page.locator('#name-input').fill(name);
    await page.locator('#name-form button[type="submit"]').click();
    await expectText(page.locator('#name-status'), `Named ${name}.`);
    await expectText(page.locator('#viewer .box').first().locator('.box-name'), name);
    const subjects = await (await fetch(`${server.url}/subjects`)).json();
    const subject = subjects.subjects.find((s) => s.name === name);
    assert.ok(subject, `subject ${name} created: ${JSON.stringify(subjects)}`);
    assert.equal(subject.examples_count, 1);
    const shown = await (await fetch(`${server.url}/image/${uploadedId}`)).json();
    assert.deepEqual(shown.faces.map((f) => f.subject), [name, null]);

    await page.keyboard.press('Escape');
    await viewer.waitFor({ state: 'hidden' });
    assert.equal(await viewer.evaluate((d) => d.open), false);

    assert.deepEqual(pageErrors.map(String), [], 'uncaught errors in the page');
  });

  test('options: the mode and minimum score chosen on the page go with the upload', async (t) => {
    const { page, pageErrors, close } = await launch({ viewport: { width: 1280, height: 900 } });
    t.after(close);
    await openPage(page);
    await page.locator('#mode-input').selectOption('accurate');
    await page.locator('#threshold-input').fill('0.3');
    const sent = await uploadViaInput(page, TWO_PEOPLE);
    assert.equal(sent.status, 202, JSON.stringify(sent.body));
    const shown = await (await fetch(`${server.url}/image/${sent.body.id}`)).json();
    assert.equal(shown.mode, 'accurate');
    assert.equal(shown.threshold, 0.3);

    // A bad value is the server's 400, shown like any other refusal.
    await page.locator('#threshold-input').evaluate((el) => { el.min = ''; el.max = ''; });
    await page.locator('#threshold-input').fill('7');
    const bad = await uploadViaInput(page, TWO_PEOPLE);
    assert.equal(bad.status, 400);
    assert.deepEqual(Object.keys(bad.body), ['threshold']);
    await page.locator('#errors').getByText(bad.body.threshold[0], { exact: false }).waitFor({ state: 'visible' });
    assert.deepEqual(pageErrors.map(String), [], 'uncaught errors in the page');
  });

  test('phone: recent results are shown on load', async (t) => {
    assert.ok(uploadedId, 'needs the desktop test to have uploaded a photo');
    const { page, pageErrors, close } = await launch({
      viewport: { width: 390, height: 844 },
      isMobile: true,
      hasTouch: true,
      deviceScaleFactor: 2,
    });
    t.after(close);

    await openPage(page);
    // Not uploaded from this page: it must come from the recent list.
    const card = page.locator(`#gallery .card[data-id="${uploadedId}"]`);
    await card.waitFor({ state: 'visible' });
    await expectText(card.locator('.count'), '2 faces');
    await waitImagesLoaded(page, '#gallery .card img');
    // Nothing sticks out sideways on a phone.
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `page is ${overflow}px wider than the 390px viewport`);
    await page.screenshot({ path: path.join(SHOTS, 'phone.png'), fullPage: true });
    assert.deepEqual(pageErrors.map(String), [], 'uncaught errors in the page');
  });

  test('no JavaScript: the form posts and redirects back to the page', async (t) => {
    const { page, close } = await launch({ viewport: { width: 1280, height: 900 }, javaScriptEnabled: false });
    t.after(close);

    await page.goto(`${server.url}/`, { waitUntil: 'domcontentloaded' });
    await page.locator('#file-input').setInputFiles(TWO_PEOPLE);
    const [post, followed] = await Promise.all([
      page.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === '/image/'),
      // The GET that follows the redirect (its redirectedFrom is the POST).
      page.waitForRequest((r) => r.method() === 'GET' && r.redirectedFrom()?.method() === 'POST'),
      page.locator('#upload-form button[type="submit"]').click(),
    ]);
    assert.equal(post.status(), 303);
    assert.equal(post.headers().location, '/');
    assert.equal(followed.url(), `${server.url}/`);
    assert.equal((await followed.response()).status(), 200);
    await page.waitForLoadState('domcontentloaded');
    assert.equal(page.url(), `${server.url}/`);
    await page.locator('#upload-form').waitFor({ state: 'visible' });

    // A refused upload shows a readable page, not JSON.
    await page.locator('#file-input').setInputFiles(NOT_AN_IMAGE);
    const [refused] = await Promise.all([
      page.waitForResponse((r) => r.request().method() === 'POST' && new URL(r.url()).pathname === '/image/'),
      page.locator('#upload-form button[type="submit"]').click(),
    ]);
    assert.equal(refused.status(), 400);
    assert.match(refused.headers()['content-type'], /^text\/html/);
    await page.getByText(ERR_INVALID_IMAGE).waitFor({ state: 'visible' });
  });
});

describe('a server started with API keys', () => {
  test('the page asks for the key once, then uploads, shows and streams with it', async (t) => {
    const KEY = 'page-test-key';
    const keyed = await startFaces({ extraArgs: ['--api-key', KEY] });
    t.after(() => keyed.stop());
    const { page, pageErrors, close } = await launch({ viewport: { width: 1280, height: 900 } });
    t.after(close);

    await page.goto(`${keyed.url}/`, { waitUntil: 'domcontentloaded' });
    // The recent-results request is refused, so the page asks for a key.
    const keyForm = page.locator('#key-form');
    await keyForm.waitFor({ state: 'visible' });
    await page.locator('#key-input').fill(KEY);
    await page.locator('#key-form button[type="submit"]').click();
    await keyForm.waitFor({ state: 'hidden' });
    // The feed reconnects with the key.
    await page.locator('#feed-status', { hasText: /^live$/ }).waitFor({ state: 'visible' });

    const ok = await uploadViaInput(page, TWO_PEOPLE);
    assert.equal(ok.status, 202, `upload answered ${ok.status} ${JSON.stringify(ok.body)}`);
    const card = page.locator(`#gallery .card[data-id="${ok.body.id}"]`);
    await card.locator('.count', { hasText: /^2 faces$/ }).waitFor({ state: 'visible' });
    // The marked image itself is protected; it loads because the page adds the key.
    await waitImagesLoaded(page, `#gallery .card[data-id="${ok.body.id}"] img`);

    // Without the key the same API refuses: the key really was needed.
    const bare = await fetch(`${keyed.url}/image/${ok.body.id}`);
    assert.equal(bare.status, 401);
    // A reload remembers the key: no prompt, and the card is there.
    await page.reload({ waitUntil: 'domcontentloaded' });
    await card.waitFor({ state: 'visible' });
    assert.equal(await keyForm.isHidden(), true);
    assert.deepEqual(pageErrors.map(String), [], 'uncaught errors in the page');
  });
});

describe('no-JavaScript form post over HTTP', () => {
  test('accepted upload with Accept: text/html answers 303 to /', async () => {
    const r = await uploadFile(server.url, 'known_counts/fr_two_people.jpg', {
      headers: { Accept: 'text/html' },
      redirect: 'manual',
    });
    assert.equal(r.status, 303);
    assert.equal(r.headers.get('location'), '/');
  });

  test('refused upload with Accept: text/html answers an HTML page with the error', async () => {
    const r = await uploadFile(server.url, 'edge/files/not_an_image.jpg', {
      headers: { Accept: 'text/html' },
      redirect: 'manual',
    });
    assert.equal(r.status, 400);
    assert.match(r.headers.get('content-type') || '', /^text\/html\b/);
    const html = await r.text();
    assert.match(html, /^\s*<!doctype html>/i);
    assert.ok(html.includes(ERR_INVALID_IMAGE), `page should contain the error sentence:\n${html}`);
  });

  test('the same refusal still answers JSON to API clients', async () => {
    const r = await uploadFile(server.url, 'edge/files/not_an_image.jpg', { headers: { Accept: 'application/json' } });
    assert.equal(r.status, 400);
    assert.match(r.headers.get('content-type') || '', /^application\/json/);
    assert.deepEqual(await r.json(), { image: [ERR_INVALID_IMAGE] });
  });
});

async function expectText(locator, text) {
  await locator.filter({ hasText: text }).first().waitFor({ state: 'visible' });
  assert.equal((await locator.first().textContent()).trim(), text);
}
