#!/usr/bin/env node
// Test peer for verifyd's outgoing callbacks: a "customer backend" that records
// every callback and checks its signature with the OFFICIAL Sinch validator
// (@sinch/verification 1.4.0, `VerificationCallbackWebhooks#validateAuthenticationHeader`).
// Only node:http + the SDK; answers are scripted by the test over a control API.
//
// Environment:
//   RECEIVER_PORT    port to listen on; 0 (default) = pick a free port
//   RECEIVER_HOST    bind address (default 127.0.0.1)
//   RECEIVER_KEY     application key the callbacks must be signed for
//   RECEIVER_SECRET  application secret (base64, as configured in verifyd)
//   RECEIVER_EXIT_ON_STDIN_EOF=1  exit when stdin closes (spawn with a piped stdin
//                    and the receiver dies with its parent test process)
//
// stdout: exactly one line, `listening <port>`, once the socket is bound.
// Everything else (diagnostics, invalid signatures) goes to stderr.
// Exit 2 on bad configuration. SIGTERM / SIGINT exit 0 immediately.
//
// Callbacks: every POST whose path does not start with `/__control`.
//   Recorded as { seq, path, url, method, headers, body, json, valid, event,
//   receivedAt, rejected } where
//     seq        1, 2, 3 ... in the order the bodies finished arriving (restarts at 1 after reset)
//     path       req.url without the query string (this is what is validated)
//     url        req.url as received (with query string, if any)
//     headers    Node's req.headers (names lower-cased; duplicates joined by Node)
//     body       the raw body decoded as UTF-8, exactly as received ('' if none)
//     json       JSON.parse(body), or null if it does not parse
//     valid      result of the official validator for (headers, body, path, method)
//     event      json.event if json is an object with a string `event`, else null
//     receivedAt Date.now() when the body was complete
//     rejected   true iff answered 503 because the receiver was "down"
//   The event is recorded BEFORE the (possibly delayed) answer is sent.
//   Non-POST requests outside /__control get 405 and are not recorded.
//
// Control API (JSON in, JSON out):
//   POST /__control/script  {"request":[answer...],"other":[answer...]}
//       Replaces BOTH FIFO queues (a missing key = empty queue). `request` answers
//       are used for callbacks whose event is "VerificationRequestEvent", `other`
//       for everything else (including bodies that are not JSON). Each callback
//       consumes one answer from its queue; an empty queue uses the default:
//         request -> 200 {"action":"allow"}      other -> 200, empty body
//       An answer is merged over that default, so omitted fields keep default values:
//         status   HTTP status (default 200)
//         body     any JSON value, sent JSON-encoded with content-type application/json
//                  (a string is sent as a JSON string); null = empty body, no content-type
//         raw      string sent verbatim instead of `body` (content-type text/plain;
//                  charset=utf-8 unless `headers` sets one)
//         headers  extra response headers {name: value}; override the defaults
//         delayMs  wait this long before answering (or destroying), default 0
//         destroy  true = destroy the socket instead of answering (after delayMs)
//       -> 200 {"ok":true,"request":<n>,"other":<n>}; 400 on malformed input.
//   POST /__control/down    {"down":true|false}
//       While down every callback is answered 503, `Retry-After: 1`, empty body,
//       without consuming script answers; it is still recorded (rejected: true).
//       -> 200 {"ok":true,"down":<bool>}
//   GET  /__control/events[?min=N&timeoutMs=T]
//       -> 200 {"events":[...]} all recorded callbacks in order. With `min`, waits
//       until at least N are recorded or T ms (default 5000) passed, then answers
//       with whatever is there (the caller checks the count).
//   POST /__control/reset   clears events and both queues, sets down=false, seq restarts.
//       -> 200 {"ok":true}
//   anything else under /__control -> 404.
//
// Run: cd e2e/node && npm ci && RECEIVER_KEY=... RECEIVER_SECRET=... node callback-receiver.mjs

import http from 'node:http';
import { VerificationCallbackWebhooks } from '@sinch/verification';

// The SDK (and anything else) must not write to stdout: the port line is the only output.
console.log = console.error;
console.info = console.error;
console.debug = console.error;

// --------------------------------------------------------------------------
// configuration

const KEY = process.env.RECEIVER_KEY;
const SECRET = process.env.RECEIVER_SECRET;
const HOST = process.env.RECEIVER_HOST || '127.0.0.1';
const PORT_RAW = process.env.RECEIVER_PORT ?? '0';
const PORT = PORT_RAW === '' ? 0 : Number(PORT_RAW);

if (!KEY || !SECRET) {
  console.error('usage: RECEIVER_PORT=0 RECEIVER_KEY=... RECEIVER_SECRET=<base64> node callback-receiver.mjs');
  process.exit(2);
}
if (!Number.isInteger(PORT) || PORT < 0 || PORT > 65535) {
  console.error(`RECEIVER_PORT must be an integer 0..65535, got ${JSON.stringify(PORT_RAW)}`);
  process.exit(2);
}

const validator = new VerificationCallbackWebhooks({ applicationKey: KEY, applicationSecret: SECRET });

// --------------------------------------------------------------------------
// state

const DEFAULT_ANSWER = {
  request: { status: 200, body: { action: 'allow' }, delayMs: 0, headers: {}, destroy: false },
  other: { status: 200, body: null, delayMs: 0, headers: {}, destroy: false },
};

let events = [];
let seq = 0;
let down = false;
let queues = { request: [], other: [] };
let waiters = []; // pending GET /__control/events?min=N: { min, finish }

function record(ev) {
  events.push(ev);
  waiters = waiters.filter((w) => {
    if (events.length >= w.min) {
      w.finish();
      return false;
    }
    return true;
  });
}

// --------------------------------------------------------------------------
// helpers

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function sendJson(res, status, value) {
  const text = JSON.stringify(value);
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
  });
  res.end(text);
}

function isPlainObject(v) {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function validateAnswer(a, where) {
  if (!isPlainObject(a)) return `${where}: answer must be an object`;
  if ('status' in a && !(Number.isInteger(a.status) && a.status >= 100 && a.status <= 999)) {
    return `${where}: status must be an integer 100..999`;
  }
  if ('delayMs' in a && !(typeof a.delayMs === 'number' && a.delayMs >= 0)) {
    return `${where}: delayMs must be a number >= 0`;
  }
  if ('headers' in a && !isPlainObject(a.headers)) return `${where}: headers must be an object`;
  if ('raw' in a && a.raw !== null && typeof a.raw !== 'string') return `${where}: raw must be a string`;
  if ('destroy' in a && typeof a.destroy !== 'boolean') return `${where}: destroy must be a boolean`;
  return null;
}

function writeAnswer(req, res, answer) {
  if (answer.destroy) {
    req.socket.destroy();
    return;
  }
  const headers = {};
  let payload = '';
  if (typeof answer.raw === 'string') {
    payload = answer.raw;
    headers['content-type'] = 'text/plain; charset=utf-8';
  } else if (answer.body !== null && answer.body !== undefined) {
    payload = JSON.stringify(answer.body);
    headers['content-type'] = 'application/json';
  }
  for (const [name, value] of Object.entries(answer.headers || {})) {
    headers[name.toLowerCase()] = value;
  }
  headers['content-length'] = Buffer.byteLength(payload);
  try {
    res.writeHead(answer.status, headers);
    res.end(payload);
  } catch (err) {
    console.error(`[receiver] could not write answer: ${err.message}`);
    req.socket.destroy();
  }
}

// --------------------------------------------------------------------------
// callbacks

async function handleCallback(req, res, path) {
  const body = await readBody(req);
  const method = req.method;

  let json = null;
  try {
    json = JSON.parse(body);
  } catch {
    json = null;
  }
  const event = isPlainObject(json) && typeof json.event === 'string' ? json.event : null;

  let valid;
  try {
    valid = validator.validateAuthenticationHeader(req.headers, body, path, method) === true;
  } catch (err) {
    console.error(`[receiver] validator threw: ${err.stack || err}`);
    valid = false;
  }

  seq += 1;
  const ev = {
    seq,
    path,
    url: req.url,
    method,
    headers: { ...req.headers },
    body,
    json,
    valid,
    event,
    receivedAt: Date.now(),
    rejected: down,
  };
  record(ev);

  if (!valid) {
    console.error(
      `[receiver] INVALID signature on callback #${seq} ${method} ${req.url} event=${event}` +
        ` authorization=${JSON.stringify(req.headers.authorization)}` +
        ` x-timestamp=${JSON.stringify(req.headers['x-timestamp'])}` +
        ` content-type=${JSON.stringify(req.headers['content-type'])}` +
        ` body=${JSON.stringify(body)}`,
    );
  }

  if (down) {
    res.writeHead(503, { 'retry-after': '1', 'content-length': 0 });
    res.end();
    return;
  }

  const kind = event === 'VerificationRequestEvent' ? 'request' : 'other';
  const scripted = queues[kind].shift();
  const answer = { ...DEFAULT_ANSWER[kind], ...(scripted || {}) };
  const delay = Number(answer.delayMs) || 0;
  if (delay > 0) {
    setTimeout(() => writeAnswer(req, res, answer), delay);
  } else {
    writeAnswer(req, res, answer);
  }
}

// --------------------------------------------------------------------------
// control API

async function handleControl(req, res, path, query) {
  const raw = await readBody(req);
  let input = null;
  if (req.method === 'POST') {
    try {
      input = raw === '' ? {} : JSON.parse(raw);
    } catch {
      return sendJson(res, 400, { error: 'body is not JSON' });
    }
    if (!isPlainObject(input)) return sendJson(res, 400, { error: 'body must be a JSON object' });
  }

  const route = `${req.method} ${path}`;
  switch (route) {
    case 'POST /__control/script': {
      const next = { request: [], other: [] };
      for (const kind of ['request', 'other']) {
        const list = input[kind];
        if (list === undefined || list === null) continue;
        if (!Array.isArray(list)) return sendJson(res, 400, { error: `${kind} must be an array` });
        for (let i = 0; i < list.length; i += 1) {
          const problem = validateAnswer(list[i], `${kind}[${i}]`);
          if (problem) return sendJson(res, 400, { error: problem });
        }
        next[kind] = list.slice();
      }
      queues = next;
      return sendJson(res, 200, { ok: true, request: queues.request.length, other: queues.other.length });
    }
    case 'POST /__control/down': {
      if (typeof input.down !== 'boolean') return sendJson(res, 400, { error: 'down must be a boolean' });
      down = input.down;
      return sendJson(res, 200, { ok: true, down });
    }
    case 'GET /__control/events': {
      const minRaw = query.get('min');
      if (minRaw === null) return sendJson(res, 200, { events });
      const min = Number(minRaw);
      const timeoutRaw = query.get('timeoutMs');
      const timeoutMs = timeoutRaw === null ? 5000 : Number(timeoutRaw);
      if (!Number.isInteger(min) || min < 0 || !Number.isFinite(timeoutMs) || timeoutMs < 0) {
        return sendJson(res, 400, { error: 'min must be an integer >= 0, timeoutMs a number >= 0' });
      }
      if (events.length >= min) return sendJson(res, 200, { events });
      let done = false;
      const waiter = { min, finish: () => {} };
      const finish = () => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        waiters = waiters.filter((w) => w !== waiter);
        sendJson(res, 200, { events });
      };
      waiter.finish = finish;
      const timer = setTimeout(finish, timeoutMs);
      waiters.push(waiter);
      res.on('close', () => {
        clearTimeout(timer);
        waiters = waiters.filter((w) => w !== waiter);
      });
      return undefined;
    }
    case 'POST /__control/reset': {
      events = [];
      seq = 0;
      down = false;
      queues = { request: [], other: [] };
      return sendJson(res, 200, { ok: true });
    }
    default:
      return sendJson(res, 404, { error: `unknown control route ${route}` });
  }
}

// --------------------------------------------------------------------------
// server

const server = http.createServer((req, res) => {
  const url = req.url || '/';
  const q = url.indexOf('?');
  const path = q === -1 ? url : url.slice(0, q);
  const query = new URLSearchParams(q === -1 ? '' : url.slice(q + 1));

  let work;
  if (path.startsWith('/__control')) {
    work = handleControl(req, res, path, query);
  } else if (req.method === 'POST') {
    work = handleCallback(req, res, path);
  } else {
    console.error(`[receiver] ignoring ${req.method} ${url} (callbacks must be POST)`);
    req.resume();
    sendJson(res, 405, { error: 'callbacks must be POST' });
    return;
  }
  work.catch((err) => {
    console.error(`[receiver] error handling ${req.method} ${url}: ${err.stack || err}`);
    if (!res.headersSent) {
      try {
        sendJson(res, 500, { error: String(err) });
      } catch {
        req.socket.destroy();
      }
    }
  });
});

// Never close idle keep-alive connections from this side: Node's default (5 s)
// races with a pooling client (e.g. reqwest/hyper, 90 s idle) that reuses a
// connection just as it is closed, which would show up as spurious delivery
// failures in verifyd. The client decides when to close.
server.keepAliveTimeout = 0;

server.on('clientError', (err, socket) => {
  console.error(`[receiver] client error: ${err.message}`);
  if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
  else socket.destroy();
});

server.on('error', (err) => {
  console.error(`[receiver] server error: ${err.message}`);
  process.exit(1);
});

server.listen(PORT, HOST, () => {
  process.stdout.write(`listening ${server.address().port}\n`);
});

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => process.exit(0));
}

if (process.env.RECEIVER_EXIT_ON_STDIN_EOF === '1') {
  process.stdin.on('end', () => process.exit(0));
  process.stdin.on('close', () => process.exit(0));
  process.stdin.resume();
}
