// Test helper: start a throwaway `faces serve` on a free port with a temp data
// dir, wait for /healthcheck (with a deadline, no fixed sleeps), and stop it.
//
// Env:
//   FACES_BIN     path to the faces binary (default ../../target/debug/faces,
//                 relative to this directory)
//   FACES_LOG     passed through; defaults to "warn" to keep test output quiet
//   FACES_TEST_VERBOSE=1  echo the server's output while the tests run
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = path.resolve(HERE, '..', '..');
/** Shared test photos: FACES_TEST_DATA, else ../shared/data beside the repo (never copied in). */
export const DATA_DIR = process.env.FACES_TEST_DATA
  ? path.resolve(process.env.FACES_TEST_DATA)
  : path.resolve(REPO_ROOT, '..', 'shared', 'data');
export const FACES_BIN = process.env.FACES_BIN
  ? path.resolve(process.env.FACES_BIN)
  : path.resolve(HERE, '..', '..', 'target', 'debug', 'faces');

export const ERR_INVALID_IMAGE =
  'Upload a valid image. The file you uploaded was either not an image or a corrupted image.';

/** A TCP port that was free a moment ago on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Poll `check` (async, returns a truthy value when done) until it succeeds or
 * `timeoutMs` passes; then throw with `what` and the last error seen.
 */
export async function waitFor(check, { timeoutMs = 10_000, intervalMs = 50, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  let lastErr;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch (err) {
      if (err && err.fatal) throw err;
      lastErr = err;
    }
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastErr ? `: ${lastErr.message}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Reject after `ms` with a message, unless `promise` settles first. */
export function withDeadline(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

const running = new Set();
// Last resort if a test run dies without calling stop(): never leave a server behind.
process.on('exit', () => {
  for (const child of running) {
    try { child.kill('SIGKILL'); } catch { /* already gone */ }
  }
});

/**
 * Start the service. Returns { url, port, dataDir, output(), stop() }.
 * Retries on a fresh port if the chosen one was taken in the meantime.
 */
export async function startFaces({ readyTimeoutMs = 30_000, extraArgs = [], attempts = 3 } = {}) {
  let lastErr;
  for (let i = 0; i < attempts; i += 1) {
    try {
      return await startOnce({ readyTimeoutMs, extraArgs });
    } catch (err) {
      lastErr = err;
      if (!err.retryable) break;
    }
  }
  throw lastErr;
}

async function startOnce({ readyTimeoutMs, extraArgs }) {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const dataDir = await mkdtemp(path.join(tmpdir(), 'faces-e2e-data-'));
  const args = ['serve', '--host', '127.0.0.1', '--port', String(port), '--data-dir', dataDir,
    '--public-url', url, ...extraArgs];
  const child = spawn(FACES_BIN, args, {
    cwd: REPO_ROOT,
    env: { ...process.env, FACES_LOG: process.env.FACES_LOG || 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(child);

  let out = '';
  const keep = (chunk) => {
    out += chunk;
    if (out.length > 200_000) out = out.slice(-100_000);
    if (process.env.FACES_TEST_VERBOSE) process.stderr.write(chunk);
  };
  child.stdout.setEncoding('utf8').on('data', keep);
  child.stderr.setEncoding('utf8').on('data', keep);

  let exited = null;
  let spawnError = null;
  const exitPromise = new Promise((resolve) => {
    child.on('exit', (code, signal) => { exited = { code, signal }; running.delete(child); resolve(exited); });
    child.on('error', (err) => { spawnError = err; running.delete(child); resolve({ code: null, signal: null }); });
  });

  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    if (!exited && !spawnError) {
      child.kill('SIGTERM');
      // Graceful shutdown gets 10 s, then SIGKILL.
      const done = await withDeadline(exitPromise, 10_000, 'faces to exit after SIGTERM').catch(() => null);
      if (!done) {
        // Not a test failure (tests are about the API, not shutdown), but say so.
        process.stderr.write(`faces-server: ${url} did not exit within 10 s of SIGTERM; sent SIGKILL\n`);
        child.kill('SIGKILL');
        await exitPromise;
      }
    }
    await rm(dataDir, { recursive: true, force: true, maxRetries: 3 });
  };

  try {
    await waitFor(async () => {
      if (spawnError) throw Object.assign(new Error(`cannot run ${FACES_BIN}: ${spawnError.message} (build it with \`cargo build -p faces\` or set FACES_BIN)`), { fatal: true });
      if (exited) throw Object.assign(new Error(`faces exited early (${JSON.stringify(exited)})`), { fatal: true });
      const r = await fetch(`${url}/healthcheck`, { signal: AbortSignal.timeout(2_000) });
      const body = await r.text();
      return r.status === 200 && body.trim() === 'OK';
    }, { timeoutMs: readyTimeoutMs, intervalMs: 100, what: `${url}/healthcheck` });
  } catch (err) {
    await stop();
    const e = new Error(`faces did not become ready: ${spawnError ? spawnError.message : err.message}\n--- server output ---\n${out.slice(-4000)}`);
    // A port grabbed by someone else between freePort() and bind: try another.
    e.retryable = !spawnError && /address.*in use|AddrInUse|os error 98/i.test(out);
    throw e;
  }

  return { url, port, dataDir, child, output: () => out, stop };
}

/** POST a file of DATA_DIR to /image/ as multipart field `image`. */
export async function uploadFile(baseUrl, relPath, { headers = {}, redirect = 'follow', field = 'image', name } = {}) {
  const bytes = await readFile(path.join(DATA_DIR, relPath));
  const form = new FormData();
  form.append(field, new Blob([bytes]), name || path.basename(relPath));
  return fetch(`${baseUrl}/image/`, { method: 'POST', body: form, headers, redirect });
}
