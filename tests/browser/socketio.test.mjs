// End-to-end tests of the Socket.IO v4 endpoint (SPEC section 4, last paragraph):
// clients written for the Flask + Socket.IO reference get the event `upload`
// with the processed image's URL path as its one argument.
//
//   FACES_BIN   faces binary (default ../../target/debug/faces)
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { io } from 'socket.io-client';
import { startFaces, uploadFile, waitFor, withDeadline } from './faces-server.mjs';

const STEP_MS = 20_000; // deadline for any one thing the service must do
const TWO_PEOPLE = 'known_counts/fr_two_people.jpg';

let server;
const sockets = new Set();

before(async () => {
  server = await startFaces();
});

// Clients stay connected until the server has stopped: the server closes them
// itself on shutdown. (Closing a long-polling client in the same instant as the
// SIGTERM can make faces wait for that client's dangling poll, about 25 s; that
// is a server-side issue, not what these tests are about.)
after(async () => {
  if (server) await server.stop();
  for (const s of sockets) s.close();
});

/** Connect a Socket.IO client; resolves once connected. Records every `upload` event. */
async function connect(options = {}) {
  const socket = io(server.url, {
    path: '/socket.io/',
    forceNew: true,
    reconnection: false,
    timeout: STEP_MS,
    ...options,
  });
  sockets.add(socket);
  const events = [];
  socket.on('upload', (...args) => events.push(args));
  await withDeadline(new Promise((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('connect_error', (err) => reject(new Error(`connect_error: ${err.message}`)));
  }), STEP_MS, `Socket.IO connect (${JSON.stringify(options)})`);
  assert.equal(socket.connected, true);
  assert.ok(socket.id, 'a connected socket has an id');
  return { socket, events };
}

/** Upload a file over HTTP and return the 202 body. */
async function upload(rel) {
  const r = await uploadFile(server.url, rel, { headers: { Accept: 'application/json' } });
  const body = await r.json();
  assert.equal(r.status, 202, `upload of ${rel} answered ${r.status} ${JSON.stringify(body)}`);
  assert.match(body.id, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  return body;
}

/** Wait for the `upload` event that names this submission's processed image. */
async function eventFor(events, id) {
  const args = await waitFor(
    () => events.find((a) => typeof a[0] === 'string' && a[0].endsWith(`${id}.jpg`)),
    { timeoutMs: STEP_MS, intervalMs: 20, what: `Socket.IO "upload" event for ${id} (got ${JSON.stringify(events)})` },
  );
  return args;
}

/** The checks every received event must pass; then fetch the image it names. */
async function checkEvent(args, id) {
  assert.equal(args.length, 1, `"upload" has exactly one argument, got ${JSON.stringify(args)}`);
  const [urlPath] = args;
  assert.equal(typeof urlPath, 'string');
  assert.ok(urlPath.startsWith('/static/processed_faces/'), `a path, not a full URL: ${urlPath}`);
  assert.ok(urlPath.endsWith(`${id}.jpg`));
  assert.equal(urlPath, `/static/processed_faces/${id.slice(0, 2)}/${id.slice(2, 4)}/${id}.jpg`);

  // It is the same image the HTTP API reports for the submission.
  const sub = await (await fetch(`${server.url}/image/${id}`, { headers: { Accept: 'application/json' } })).json();
  assert.equal(sub.status, 'done');
  assert.equal(sub.faces_count, 2);
  assert.equal(new URL(sub.image_url).pathname, urlPath);

  const img = await fetch(`${server.url}${urlPath}`);
  assert.equal(img.status, 200);
  assert.match(img.headers.get('content-type') || '', /^image\/jpeg\b/);
  const bytes = new Uint8Array(await img.arrayBuffer());
  assert.ok(bytes.length > 1000, `a real JPEG, got ${bytes.length} bytes`);
  assert.deepEqual([...bytes.subarray(0, 3)], [0xff, 0xd8, 0xff], 'JPEG magic number');
}

describe('Socket.IO endpoint', () => {
  test('websocket transport: upload event with the processed image path', async () => {
    const { socket, events } = await connect({ transports: ['websocket'] });
    assert.equal(socket.io.engine.transport.name, 'websocket');

    const { id } = await upload(TWO_PEOPLE);
    await checkEvent(await eventFor(events, id), id);
  });

  test('default transports: long-polling upgrades to websocket, then gets the event', async () => {
    const { socket, events } = await connect();
    const engine = socket.io.engine;
    if (engine.transport.name !== 'websocket') {
      assert.equal(engine.transport.name, 'polling', 'the default client starts on long-polling');
      await withDeadline(new Promise((resolve) => engine.once('upgrade', resolve)), STEP_MS, 'transport upgrade');
    }
    assert.equal(engine.transport.name, 'websocket');

    // Same bytes again: answered from the earlier result, still a new submission, still notified (SPEC 3).
    const { id } = await upload(TWO_PEOPLE);
    await checkEvent(await eventFor(events, id), id);
  });

  test('long-polling only: the event arrives over polling', async () => {
    const { socket, events } = await connect({ transports: ['polling'], upgrade: false });
    assert.equal(socket.io.engine.transport.name, 'polling');

    const { id } = await upload(TWO_PEOPLE);
    await checkEvent(await eventFor(events, id), id);
    assert.equal(socket.io.engine.transport.name, 'polling');
  });

  test('every client gets each event once; an image without faces emits nothing', async () => {
    const a = await connect({ transports: ['websocket'] });
    const b = await connect({ transports: ['polling'], upgrade: false });

    // No face: processed (done, 0 faces) but no notification (SPEC 5).
    const none = await upload('edge/files/black_640x480.jpg');
    const sub = await waitFor(async () => {
      const s = await (await fetch(`${server.url}/image/${none.id}`, { headers: { Accept: 'application/json' } })).json();
      assert.notEqual(s.status, 'failed', `processing failed: ${s.error}`);
      return s.status === 'done' && s;
    }, { timeoutMs: STEP_MS, what: `submission ${none.id} to be done` });
    assert.equal(sub.faces_count, 0);

    // Then one with faces: both clients get it. Events are sent as processing
    // finishes, so by the time this one arrives a stray event for the
    // face-less image would have arrived too.
    const { id } = await upload('known_counts/fr_obama.jpg');
    for (const c of [a, b]) {
      const args = await eventFor(c.events, id);
      assert.equal(args.length, 1);
      assert.equal(args[0], `/static/processed_faces/${id.slice(0, 2)}/${id.slice(2, 4)}/${id}.jpg`);
    }
    for (const c of [a, b]) {
      assert.deepEqual(c.events.filter((e) => String(e[0]).includes(none.id)), [], 'no event for an image without faces');
      assert.equal(c.events.filter((e) => String(e[0]).includes(id)).length, 1, 'exactly one event per detection');
    }
  });
});
