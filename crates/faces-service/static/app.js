// faces — upload page and live gallery. Plain JS, no build step, no dependencies.
// All text from the server or from file names is inserted with textContent.
'use strict';

const $ = (id) => document.getElementById(id);
const form = $('upload-form');
const input = $('file-input');
const errorsBox = $('errors');
const uploadsList = $('uploads');
const gallery = $('gallery');
const feedStatus = $('feed-status');
const viewer = $('viewer');
const viewerImg = $('viewer-img');
const stage = $('viewer-stage');
const nameForm = $('name-form');
const nameInput = $('name-input');
const nameStatus = $('name-status');

const MAX_PARALLEL = 3;   // uploads in flight at once (a big drop should not trip the rate limit)
const POLL_MS = 1000;     // status polling interval for our own uploads
const POLL_MAX = 60;      // ...and how many times (about a minute)
const MAX_CARDS = 120;    // the gallery keeps this many cards; older ones are dropped
const RECENT_URL = '/images?limit=24';

const cards = new Map();   // id -> { el, data, when } for every card in the gallery
const pending = new Map(); // id -> upload row still waiting for its outcome

// ---------- small helpers ----------

const countText = (n) => (n === 1 ? '1 face' : `${n} faces`);

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = text;
  return node;
}

// Short local time for cards: time only if today, else date + time.
function shortTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  return d.toDateString() === new Date().toDateString()
    ? d.toLocaleTimeString()
    : d.toLocaleString(undefined, { dateStyle: 'short', timeStyle: 'short' });
}

function longTime(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? '' : d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
}

// ---------- API key (only when the server was started with keys) ----------

// Kept in this browser's localStorage; sent as a bearer token, and as ?api_key=
// where a browser cannot set headers (<img>, WebSocket).
const KEY_ITEM = 'faces.apiKey';
const keyForm = $('key-form');
const keyInput = $('key-input');
const apiKey = () => localStorage.getItem(KEY_ITEM) || '';
const authHeaders = () => (apiKey() ? { Authorization: `Bearer ${apiKey()}` } : {});

function withKey(url) {
  if (!apiKey()) return url;
  const u = new URL(url, location.href);
  u.searchParams.set('api_key', apiKey());
  return u.href;
}

function askForKey() {
  if (!keyForm.hidden) return;
  keyForm.hidden = false;
  keyInput.focus();
}

keyForm.addEventListener('submit', (e) => {
  e.preventDefault();
  localStorage.setItem(KEY_ITEM, keyInput.value.trim());
  keyInput.value = '';
  keyForm.hidden = true;
  errorsBox.replaceChildren();
  loadRecent();
  if (feed) feed.close(); // reconnects with the key
});

// image_url is built from the server's configured public URL (default
// http://localhost:8282). If the page was opened under another host name that
// URL may not resolve here, so on error retry the same path on this origin.
function setImageSrc(img, url) {
  img.onerror = () => {
    img.onerror = null; // one retry only
    const u = new URL(url, location.href);
    if (u.origin !== location.origin) img.src = withKey(u.pathname + u.search);
  };
  img.src = withKey(url);
}

// Error bodies look like {"image": ["sentence", ...]}; accept plain strings too.
function messagesFrom(body) {
  if (!body || typeof body !== 'object') return [];
  return Object.values(body)
    .flatMap((v) => (Array.isArray(v) ? v : [v]))
    .filter((s) => typeof s === 'string' && s.trim() !== '');
}

function showError(text) {
  errorsBox.append(el('p', null, text));
}

// ---------- uploads ----------

function makeRow(file) {
  const li = el('li', 'upload');
  const bar = el('progress');
  bar.setAttribute('aria-label', `Upload progress for ${file.name}`);
  const status = el('span', 'upload-status');
  li.append(el('span', 'upload-name', file.name), bar, status);
  uploadsList.prepend(li);
  return { li, bar, status, name: file.name };
}

// state: uploading | processing | done | error (used by the CSS)
function setStatus(row, state, text) {
  row.li.dataset.state = state;
  row.status.textContent = text;
  row.bar.hidden = state !== 'uploading';
}

const queue = [];
let active = 0;

function enqueue(files) {
  errorsBox.replaceChildren(); // errors describe the latest batch only
  for (const file of files) {
    const row = makeRow(file);
    setStatus(row, 'uploading', 'Waiting…');
    queue.push({ file, row });
  }
  pump();
}

function pump() {
  while (active < MAX_PARALLEL && queue.length) {
    active += 1;
    upload(queue.shift()).finally(() => { active -= 1; pump(); });
  }
}

// XHR rather than fetch: fetch cannot report upload progress.
function upload({ file, row }) {
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    const body = new FormData();
    // Empty means the server's default; the server answers a bad value with a 400.
    const mode = $('mode-input').value;
    const threshold = $('threshold-input').value.trim();
    if (mode) body.append('mode', mode);
    if (threshold) body.append('threshold', threshold);
    const mark = $('mark-input').value;
    if (mark) body.append('mark', mark);
    body.append('image', file, file.name);
    xhr.open('POST', '/image/');
    xhr.setRequestHeader('Accept', 'application/json');
    for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) { row.bar.max = e.total; row.bar.value = e.loaded; }
    };
    xhr.onload = () => { handleResponse(row, xhr); resolve(); };
    // A server that refuses a big body early may reset the connection, which
    // the browser reports as a network error rather than the 413 response.
    xhr.onerror = () => { fail(row, ['Network error: the upload did not reach the server (is it running, and is the file within the size limit?).']); resolve(); };
    xhr.onabort = () => { fail(row, ['Upload cancelled.']); resolve(); };
    setStatus(row, 'uploading', 'Uploading…');
    xhr.send(body);
  });
}

function handleResponse(row, xhr) {
  let data = null;
  try { data = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
  if (xhr.status >= 200 && xhr.status < 300 && data && data.id) {
    row.li.dataset.id = data.id;
    setStatus(row, 'processing', 'Processing…');
    pending.set(data.id, row);
    // A notification may already have arrived (fast worker, duplicate bytes).
    if (cards.has(data.id)) settle(data.id, cards.get(data.id).data);
    else poll(data.id, 0);
    return;
  }
  if (xhr.status === 401) askForKey();
  let msgs = messagesFrom(data);
  if (!msgs.length) msgs = [`Upload failed (HTTP ${xhr.status}${xhr.statusText ? ` ${xhr.statusText}` : ''}).`];
  const retry = xhr.status === 429 && xhr.getResponseHeader('Retry-After');
  if (retry) msgs[msgs.length - 1] += ` (try again in ${retry} s)`;
  fail(row, msgs);
}

// The full sentences go to the #errors alert; the row just says it failed.
function fail(row, msgs) {
  setStatus(row, 'error', 'failed');
  for (const m of msgs) showError(`${row.name}: ${m}`);
}

// An image with no face gets no notification, so poll our own uploads until
// they are done or failed. A notification (settle) ends the polling.
async function poll(id, attempt) {
  const row = pending.get(id);
  if (!row) return;
  if (attempt >= POLL_MAX) {
    // Keep it pending: a late notification still updates the row.
    row.status.textContent = 'Still processing; the result will appear in the gallery when ready.';
    return;
  }
  let sub = null;
  try {
    const r = await fetch(`/image/${encodeURIComponent(id)}`, { headers: { Accept: 'application/json', ...authHeaders() }, cache: 'no-store' });
    if (r.ok) sub = await r.json();
  } catch { /* transient; try again */ }
  if (!pending.has(id)) return;
  if (sub && sub.status === 'done') {
    addCard(sub);
    settle(id, sub);
  } else if (sub && sub.status === 'failed') {
    pending.delete(id);
    const why = sub.error || 'unknown error';
    setStatus(row, 'error', 'processing failed');
    showError(`${row.name}: processing failed: ${why}`);
  } else {
    setTimeout(() => poll(id, attempt + 1), POLL_MS);
  }
}

// Final outcome for one of our uploads, from a notification or from polling.
function settle(id, data) {
  const row = pending.get(id);
  if (!row) return;
  pending.delete(id);
  const n = Number(data.faces_count) || 0;
  if (!n || !data.image_url) {
    setStatus(row, 'done', 'no faces found');
    return;
  }
  setStatus(row, 'done', `${countText(n)} found`);
  const view = el('button', 'link-button', 'View');
  view.type = 'button';
  view.setAttribute('aria-label', `View ${row.name}`);
  view.addEventListener('click', () => openViewer(id));
  row.li.append(view);
}

input.addEventListener('change', () => {
  if (!input.files.length) return;
  enqueue([...input.files]);
  input.value = ''; // so choosing the same file again fires "change" again
});

form.addEventListener('submit', (e) => {
  e.preventDefault();
  if (input.files.length) {
    enqueue([...input.files]);
    input.value = '';
  } else {
    input.click();
  }
});

// Drag and drop onto the form.
const hasFiles = (e) => e.dataTransfer && [...e.dataTransfer.types].includes('Files');
for (const type of ['dragenter', 'dragover']) {
  form.addEventListener(type, (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    e.dataTransfer.dropEffect = 'copy';
    form.classList.add('dragging');
  });
}
form.addEventListener('dragleave', (e) => {
  if (!form.contains(e.relatedTarget)) form.classList.remove('dragging');
});
form.addEventListener('drop', (e) => {
  e.preventDefault();
  form.classList.remove('dragging');
  const files = [...(e.dataTransfer ? e.dataTransfer.files : [])];
  if (files.length) enqueue(files);
});
// A file dropped beside the zone would make the browser navigate to it.
window.addEventListener('dragover', (e) => e.preventDefault());
window.addEventListener('drop', (e) => e.preventDefault());

// ---------- gallery ----------

// The subjects named in a result, once each, for its card.
function namesOf(d) {
  const names = new Set((d.faces || []).map((f) => f.subject).filter(Boolean));
  return [...names].join(', ');
}

function addCard(d) {
  if (!d || !d.id || !d.image_url || cards.has(d.id)) return;
  const n = Number(d.faces_count) || 0;
  const iso = d.processed_at || d.created_at;
  const when = Date.parse(iso) || Date.now();

  const card = el('button', 'card');
  card.type = 'button';
  card.dataset.id = d.id;
  const img = el('img');
  img.alt = '';
  img.loading = 'lazy';
  img.decoding = 'async';
  setImageSrc(img, d.image_url);
  const time = el('time', 'time', shortTime(iso));
  if (iso) { time.dateTime = iso; time.title = longTime(iso); }
  const meta = el('span', 'meta');
  meta.append(el('span', 'count', countText(n)));
  const names = namesOf(d);
  if (names) meta.append(el('span', 'names', names));
  meta.append(time);
  card.append(img, meta);
  card.addEventListener('click', () => openViewer(d.id));

  // Keep newest first even when the initial list and live events interleave.
  let before = null;
  for (const other of gallery.children) {
    if (cards.get(other.dataset.id).when < when) { before = other; break; }
  }
  gallery.insertBefore(card, before);
  cards.set(d.id, { el: card, data: d, when });

  while (gallery.children.length > MAX_CARDS) {
    const last = gallery.lastElementChild;
    cards.delete(last.dataset.id);
    last.remove();
  }
}

async function loadRecent() {
  try {
    const r = await fetch(RECENT_URL, { headers: { Accept: 'application/json', ...authHeaders() }, cache: 'no-store' });
    if (r.status === 401) askForKey();
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const body = await r.json();
    for (const item of body.images || []) addCard(item);
  } catch (err) {
    console.warn('faces: could not load recent images:', err);
  }
}

// ---------- live feed ----------

let retryDelay = 1000;
let everOpened = false;

function setFeed(state) {
  feedStatus.dataset.state = state;
  feedStatus.textContent = state === 'live' ? 'live' : state === 'connecting' ? 'connecting…' : 'reconnecting…';
}

let feed = null; // the open WebSocket, if any
let lastSeq = null; // the seq of the newest feed message seen, to resume after it

function connect() {
  const after = lastSeq === null ? '' : `?after=${lastSeq}`;
  const ws = new WebSocket(withKey(`${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/faces${after}`));
  feed = ws;
  ws.onopen = () => {
    setFeed('live');
    retryDelay = 1000;
    // Resuming after lastSeq replays what we missed; without one (no message
    // yet), the recent list fills the gap.
    if (everOpened && lastSeq === null) loadRecent();
    everOpened = true;
  };
  ws.onmessage = (e) => {
    let msg;
    try { msg = JSON.parse(e.data); } catch { return; }
    if (!msg || !msg.id) return;
    if (Number.isInteger(msg.seq)) lastSeq = Math.max(lastSeq ?? 0, msg.seq);
    addCard(msg);
    settle(msg.id, msg);
  };
  ws.onclose = (e) => {
    setFeed('reconnecting');
    // 4409: our lastSeq is beyond the server's newest (its database was restored
    // or replaced): start afresh, and let the recent list fill the page.
    if (e.code === 4409) lastSeq = null;
    // Jitter, so that many pages do not all reconnect in the same instant
    // after a server restart.
    setTimeout(connect, retryDelay * (0.8 + Math.random() * 0.4));
    retryDelay = Math.min(retryDelay * 2, 10000);
  };
}

// ---------- viewer ----------

// "Open image" on a server with keys: fetch with the key and open a blob, so the
// key never lands in an address bar, history or a copied link.
$('viewer-link').addEventListener('click', async (e) => {
  if (!apiKey() || !shown) return;
  e.preventDefault();
  try {
    const r = await fetch(shown.image_url, { headers: authHeaders() });
    if (r.ok) window.open(URL.createObjectURL(await r.blob()), '_blank', 'noopener');
    else if (r.status === 401) askForKey();
  } catch { /* network error: nothing to open */ }
});

let lastFocus = null;
let shown = null; // data of the card in the viewer

// Size the image to fit the dialog; the boxes are in percent of the image,
// so they follow whatever size it ends up with.
function fitViewer() {
  const nw = viewerImg.naturalWidth;
  const nh = viewerImg.naturalHeight;
  if (!nw || !nh) return;
  const maxW = stage.parentElement.clientWidth;
  const maxH = Math.max(200, window.innerHeight - 170);
  const s = Math.min(maxW / nw, maxH / nh, 3);
  viewerImg.style.width = `${Math.floor(nw * s)}px`;
  viewerImg.style.height = `${Math.floor(nh * s)}px`;
}

function drawBoxes() {
  stage.querySelectorAll('.box, .landmark').forEach((node) => node.remove());
  const nw = viewerImg.naturalWidth;
  const nh = viewerImg.naturalHeight;
  if (!shown || !nw || !nh) return;
  const pct = (v, total) => `${(Number(v) / total) * 100}%`;
  (shown.faces || []).forEach((f, i) => {
    const box = el('button', 'box');
    box.type = 'button';
    box.style.left = pct(f.x, nw);
    box.style.top = pct(f.y, nh);
    box.style.width = pct(f.width, nw);
    box.style.height = pct(f.height, nh);
    const score = typeof f.score === 'number' ? `score ${f.score.toFixed(2)}` : '';
    box.title = f.subject ? `${f.subject} (distance ${f.distance}), ${score}` : `${score}; click to name`;
    box.setAttribute('aria-label', f.subject ? `Face ${i + 1}: ${f.subject}` : `Face ${i + 1}: name it`);
    if (i === selectedFace) box.classList.add('selected');
    if (f.subject) box.append(el('span', 'box-name', f.subject));
    box.addEventListener('click', () => selectFace(i));
    stage.append(box);
    for (const p of f.landmarks || []) {
      const dot = el('div', 'landmark');
      dot.style.left = pct(p[0], nw);
      dot.style.top = pct(p[1], nh);
      stage.append(dot);
    }
  });
}

// ---------- naming a face ----------

let selectedFace = null;

async function api(method, path, body) {
  const headers = { Accept: 'application/json', ...authHeaders() };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store' });
  if (r.status === 401) askForKey();
  let data = null;
  try { data = await r.json(); } catch { /* no body */ }
  return { ok: r.ok, status: r.status, data };
}

async function loadSubjects() {
  const r = await api('GET', '/subjects');
  const list = $('subject-list');
  list.replaceChildren();
  for (const s of (r.ok && r.data.subjects) || []) {
    const option = el('option');
    option.value = s.name;
    list.append(option);
  }
  return (r.ok && r.data.subjects) || [];
}

function selectFace(i) {
  selectedFace = i;
  drawBoxes();
  $('name-label').textContent = `Who is face ${i + 1}?`;
  nameInput.value = (shown.faces[i] && shown.faces[i].subject) || '';
  nameStatus.textContent = '';
  nameForm.hidden = false;
  nameInput.focus();
  loadSubjects();
}

nameForm.addEventListener('submit', async (e) => {
  e.preventDefault();
  const name = nameInput.value.trim();
  if (!shown || selectedFace === null || !name) return;
  const id = shown.id;
  const face = selectedFace;
  nameStatus.textContent = 'Saving…';
  try {
    const subjects = await loadSubjects();
    let subject = subjects.find((s) => s.name.toLowerCase() === name.toLowerCase());
    if (!subject) {
      const created = await api('POST', '/subjects', { name });
      if (!created.ok) throw messagesFrom(created.data);
      subject = created.data;
    }
    const added = await api('POST', `/subjects/${encodeURIComponent(subject.id)}/examples`, { image_id: id, face });
    if (!added.ok) throw messagesFrom(added.data);
    // Names are given when a result is read: read it again to show them.
    const fresh = await api('GET', `/image/${encodeURIComponent(id)}`);
    if (fresh.ok && cards.has(id)) cards.get(id).data = fresh.data;
    if (fresh.ok && shown && shown.id === id) { shown = fresh.data; drawBoxes(); }
    nameStatus.textContent = `Named ${subject.name}.`;
  } catch (msgs) {
    const text = Array.isArray(msgs) && msgs.length ? msgs.join(' ') : 'Could not save the name.';
    nameStatus.textContent = text;
  }
});

function onViewerImageLoad() {
  fitViewer();
  drawBoxes();
}

function openViewer(id) {
  const c = cards.get(id);
  if (!c) return;
  shown = c.data;
  selectedFace = null;
  nameForm.hidden = true;
  const n = Number(shown.faces_count) || 0;
  const iso = shown.processed_at || shown.created_at || '';
  lastFocus = document.activeElement;
  $('viewer-title').textContent = countText(n);
  const time = $('viewer-time');
  time.textContent = longTime(iso);
  time.dateTime = iso;
  $('viewer-link').href = shown.image_url;
  viewerImg.alt = `Processed photo with ${countText(n)} marked`;
  viewerImg.removeAttribute('src'); // no flash of the previous photo at full size
  viewerImg.removeAttribute('style');
  stage.querySelectorAll('.box, .landmark').forEach((n2) => n2.remove());
  if (!viewer.open) viewer.showModal();
  setImageSrc(viewerImg, shown.image_url);
  if (viewerImg.complete && viewerImg.naturalWidth) onViewerImageLoad();
}

viewerImg.addEventListener('load', onViewerImageLoad);
$('viewer-close').addEventListener('click', () => viewer.close());
// The dialog itself has no padding, so a click whose target is the dialog
// landed on the backdrop.
viewer.addEventListener('click', (e) => { if (e.target === viewer) viewer.close(); });
viewer.addEventListener('close', () => {
  shown = null;
  if (lastFocus && lastFocus.isConnected) lastFocus.focus();
});
window.addEventListener('resize', () => { if (viewer.open) fitViewer(); });

// ---------- start ----------

loadRecent();
connect();
