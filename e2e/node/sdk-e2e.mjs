#!/usr/bin/env node
// End-to-end checks: drive the OFFICIAL Sinch Node SDK (@sinch/sdk-core 1.4.0 +
// @sinch/verification 1.4.0) against a running verifyd in dev-inbox mode.
//
// Only the SDK talks to the Verification API. The one exception is reading the
// OTP / CLI from verifyd's dev inbox (GET /inbox/v1/messages?to=..., no auth),
// and the plain HTTP GET on a seamless targetUri (that is what a handset does).
//
// Environment:
//   VERIFYD_URL     base URL with scheme, no trailing slash, e.g. http://127.0.0.1:40123
//   VERIFYD_KEY     application key
//   VERIFYD_SECRET  application secret (base64)
//
// Output: one line per check ("ok - ..." / "not ok - ...: detail"), then a
// summary line "N passed, M failed". Exit 0 iff M == 0 (exit 2 on bad config).
//
// SDK quirks worth knowing (all verified against the installed 1.4.0 packages):
// * `verificationHostname` is the full base URL including the scheme; the SDK
//   does `hostname + '/verification/v1/...'`, so no trailing slash.
// * `smsOptions.locale` is not sent in the body: the SDK moves it into the
//   `Accept-Language` request header (and may leave `"smsOptions": {}`).
// * Phone call naming: the SDK API says "PhoneCall" (`startPhoneCall`,
//   `phoneCallOptions`, `reportPhoneCall*` with body key `phoneCall`); it
//   renames them to the wire names `calloutOptions` / `callout` before sending.
// * Data verification = wire method `seamless` (`startData`, deprecated alias
//   `startSeamless`).
// * Responses are returned as parsed JSON with the wire (camelCase) keys; the
//   SDK does not look at the response `method`. BUT it "revives" dates: any
//   string field whose first 10 chars look like a date (e.g.
//   `verificationTimestamp`) becomes a JS `Date` (a `Z` is appended if the
//   string has no zone).
// * Errors: any non-2xx response throws `RequestFailedError` (from
//   @sinch/sdk-client) with `statusCode` = HTTP status, `data` = the parsed JSON
//   body re-serialised with JSON.stringify (a STRING, not an object), and a
//   message containing `[status: 404] <statusText>`. A non-JSON error body
//   gives `ResponseJSONParseError` (a subclass) instead.

import { randomBytes, randomInt, randomUUID } from 'node:crypto';
import { SinchClient } from '@sinch/sdk-core';

// --------------------------------------------------------------------------
// configuration

const BASE = process.env.VERIFYD_URL;
const KEY = process.env.VERIFYD_KEY;
const SECRET = process.env.VERIFYD_SECRET;
if (!BASE || !KEY || !SECRET) {
  console.error('usage: VERIFYD_URL=http://127.0.0.1:PORT VERIFYD_KEY=... VERIFYD_SECRET=<base64> node sdk-e2e.mjs');
  process.exit(2);
}
if (BASE.endsWith('/')) {
  console.error('VERIFYD_URL must not end with a slash (the SDK concatenates hostname + path)');
  process.exit(2);
}

// The whole run must never hang (the SDK's fetch has no timeout of its own).
const watchdog = setTimeout(() => {
  console.log('not ok - watchdog: run did not finish within 120 s');
  summary();
}, 120_000);
watchdog.unref();

// The SDK logs to the console by default (console.debug = stdout) and prints a
// "[Sinch SDK][Debug] ...[404]" block for every error response. Send its logs to
// stderr instead so stdout carries only the check lines. `logger` is a public
// SinchClientParameters option (`null` silences it); messages may be thunks.
const sdkLogger = Object.fromEntries(['debug', 'info', 'warn', 'error'].map((level) => [
  level,
  (message, ...meta) => console.error(typeof message === 'function' ? message() : message, ...meta),
]));

// Exactly what a user would write (plus the logger redirection above).
const sinch = new SinchClient({
  applicationKey: KEY,
  applicationSecret: SECRET,
  verificationHostname: BASE,
  logger: sdkLogger,
});
const verifications = sinch.verification.verifications;
const status = sinch.verification.verificationStatus;

// --------------------------------------------------------------------------
// tiny test harness

let passed = 0;
let failed = 0;

function ok(name) {
  passed += 1;
  console.log(`ok - ${name}`);
}

function notOk(name, detail) {
  failed += 1;
  console.log(`not ok - ${name}: ${detail}`);
}

// Run one named check. `fn` throws (or returns a string = failure detail) on failure.
async function check(name, fn) {
  try {
    const res = await fn();
    if (typeof res === 'string') notOk(name, res);
    else ok(name);
    return true;
  } catch (e) {
    notOk(name, describeError(e));
    return false;
  }
}

function describeError(e) {
  if (e && typeof e === 'object' && 'statusCode' in e) {
    // RequestFailedError: show the status and the server's error body.
    return `SDK error statusCode=${e.statusCode} data=${oneLine(e.data)} message=${oneLine(e.message)}`;
  }
  return oneLine(e && e.stack ? e.message : String(e));
}

function oneLine(s) {
  return String(s).replace(/\s+/g, ' ').trim();
}

class CheckFailed extends Error {}

function expect(cond, detail) {
  if (!cond) throw new CheckFailed(detail);
}

function expectEq(actual, expected, what) {
  expect(actual === expected, `${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
}

function summary() {
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed > 0 ? 1 : 0);
}

// --------------------------------------------------------------------------
// helpers

// Distinct random Swedish mobile number (+4670 + 7 digits) per use.
const usedNumbers = new Set();
function randomNumber() {
  for (;;) {
    const n = `+4670${String(randomInt(0, 10_000_000)).padStart(7, '0')}`;
    if (!usedNumbers.has(n)) {
      usedNumbers.add(n);
      return n;
    }
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Poll the dev inbox until the message for `verificationId` shows up (max ~5 s).
// Not part of the Sinch API: plain fetch, no auth.
async function inboxMessage(to, verificationId) {
  const url = `${BASE}/inbox/v1/messages?to=${encodeURIComponent(to)}`;
  let last = 'no request made';
  for (let i = 0; i < 50; i += 1) {
    const res = await fetch(url);
    if (res.status !== 200) {
      last = `GET ${url} -> HTTP ${res.status}`;
    } else {
      const body = await res.json();
      expect(body && Array.isArray(body.messages), `inbox body has no messages array: ${JSON.stringify(body)}`);
      const msg = body.messages.find((m) => m.verificationId === verificationId);
      if (msg) {
        expectEq(msg.to, to, 'inbox message .to');
        return msg;
      }
      last = `no inbox message with verificationId ${verificationId} among ${body.messages.length}`;
    }
    await sleep(100);
  }
  throw new CheckFailed(last);
}

// `_links` must carry rel "status" (GET) and rel "report" (PUT), both absolute
// URLs pointing at /verification/v1/verifications/id/{id}.
function expectLinks(res) {
  expect(Array.isArray(res._links), `_links is not an array: ${JSON.stringify(res._links)}`);
  for (const [rel, method] of [['status', 'GET'], ['report', 'PUT']]) {
    const link = res._links.find((l) => l.rel === rel);
    expect(link, `_links has no rel "${rel}": ${JSON.stringify(res._links)}`);
    expectEq(link.method, method, `_links[${rel}].method`);
    expect(typeof link.href === 'string' && /^https?:\/\//.test(link.href)
      && link.href.endsWith(`/verification/v1/verifications/id/${res.id}`),
    `_links[${rel}].href is not an absolute .../verifications/id/${res.id} URL: ${link.href}`);
  }
}

function expectId(res) {
  expect(typeof res.id === 'string' && res.id.length > 0, `response has no id: ${JSON.stringify(res)}`);
}

// `price.verificationPrice = {currencyId, amount}` once the verification is final.
function expectPrice(res) {
  const vp = res.price && res.price.verificationPrice;
  expect(vp && typeof vp.amount === 'number' && typeof vp.currencyId === 'string' && vp.currencyId.length === 3,
    `price.verificationPrice missing/invalid: ${JSON.stringify(res.price)}`);
}

// A different code with the same shape (numeric stays numeric).
function wrongCodeFor(code) {
  const s = String(code);
  const wrong = s.replace(/\d/g, (d) => String((Number(d) + 1) % 10));
  return wrong !== s ? wrong : `${s}x`;
}

// Run `fn`, which must throw an SDK RequestFailedError with HTTP `httpStatus`
// and a Sinch error body {errorCode: <status>xx, message: "..."}.
async function expectSdkError(fn, httpStatus) {
  let err;
  try {
    const res = await fn();
    throw new CheckFailed(`expected HTTP ${httpStatus} error, call succeeded with ${JSON.stringify(res)}`);
  } catch (e) {
    if (e instanceof CheckFailed) throw e;
    err = e;
  }
  expect(err && err.statusCode !== undefined, `expected an SDK RequestFailedError, got: ${describeError(err)}`);
  expectEq(err.statusCode, httpStatus, 'error statusCode');
  expect(String(err.message).includes(`[status: ${httpStatus}]`), `error message lacks "[status: ${httpStatus}]": ${oneLine(err.message)}`);
  expect(err.constructor.name === 'RequestFailedError',
    `error is ${err.constructor.name}, not RequestFailedError (non-JSON error body?)`);
  // `data` is JSON.stringify(parsed body)
  let body;
  try {
    body = JSON.parse(err.data);
  } catch {
    throw new CheckFailed(`error data is not JSON: ${err.data}`);
  }
  expect(body && typeof body.errorCode === 'number' && String(body.errorCode).startsWith(String(httpStatus))
    && String(body.errorCode).length === 5,
  `error body errorCode is not a ${httpStatus}xx number: ${oneLine(err.data)}`);
  expect(typeof body.message === 'string' && body.message.length > 0, `error body has no message: ${oneLine(err.data)}`);
}

const identity = (endpoint) => ({ type: 'number', endpoint });
const tag = randomBytes(4).toString('hex');

// --------------------------------------------------------------------------
// SMS

async function smsFlow() {
  const number = randomNumber();
  const reference = `e2e-node-sms-${tag}-${randomBytes(4).toString('hex')}`;
  const custom = `node e2e custom ${tag}`;
  let start;
  const started = await check('sms start', async () => {
    start = await verifications.startSms({
      startVerificationWithSmsRequestBody: {
        identity: identity(number),
        reference,
        custom,
        // `locale` is moved by the SDK into the Accept-Language header.
        smsOptions: { codeType: 'Numeric', expiry: '00:05:00', locale: 'sv-SE' },
      },
    });
    expectId(start);
    expectEq(start.method, 'sms', 'method');
    expect(start.sms && typeof start.sms.template === 'string' && start.sms.template.includes('{{CODE}}'),
      `sms.template lacks {{CODE}}: ${JSON.stringify(start.sms)}`);
    expectLinks(start);
  });
  if (!started) return;

  let code;
  const gotCode = await check('sms inbox code', async () => {
    const msg = await inboxMessage(number, start.id);
    code = msg.code;
    expect(typeof code === 'string' && /^\d+$/.test(code), `codeType Numeric but inbox code is ${JSON.stringify(code)}`);
    expect(typeof msg.body === 'string' && msg.body.includes(code), `SMS body does not contain the code: ${JSON.stringify(msg.body)}`);
  });
  if (!gotCode) return;

  await check('sms report wrong code by id -> FAIL / Invalid code', async () => {
    const r = await verifications.reportSmsById({
      id: start.id,
      reportSmsVerificationByIdRequestBody: { sms: { code: wrongCodeFor(code) } },
    });
    expectEq(r.method, 'sms', 'method');
    expectEq(r.status, 'FAIL', 'status');
    expectEq(r.reason, 'Invalid code', 'reason');
  });

  await check('sms report right code by identity -> SUCCESSFUL', async () => {
    const r = await verifications.reportSmsByIdentity({
      endpoint: number,
      reportSmsVerificationByIdentityRequestBody: { sms: { code } },
    });
    expectEq(r.id, start.id, 'id');
    expectEq(r.method, 'sms', 'method');
    expectEq(r.status, 'SUCCESSFUL', 'status');
  });

  await check('sms status getById', async () => {
    const s = await status.getById({ id: start.id });
    expectEq(s.id, start.id, 'id');
    expectEq(s.method, 'sms', 'method');
    expectEq(s.status, 'SUCCESSFUL', 'status');
    expectEq(s.identity && s.identity.type, 'number', 'identity.type');
    expectEq(s.identity && s.identity.endpoint, number, 'identity.endpoint');
    expectEq(s.countryId, 'SE', 'countryId');
    expectEq(s.reference, reference, 'reference');
    expectPrice(s);
    // The SDK revives verificationTimestamp into a Date.
    expect(s.verificationTimestamp instanceof Date && !Number.isNaN(s.verificationTimestamp.getTime()),
      `verificationTimestamp not a valid date: ${JSON.stringify(s.verificationTimestamp)}`);
  });

  await check('sms status getByReference', async () => {
    const s = await status.getByReference({ reference });
    expectEq(s.id, start.id, 'id');
    expectEq(s.status, 'SUCCESSFUL', 'status');
  });

  await check('sms status getByIdentity', async () => {
    const s = await status.getByIdentity({ endpoint: number, method: 'sms' });
    expectEq(s.id, start.id, 'id');
    expectEq(s.method, 'sms', 'method');
    expectEq(s.status, 'SUCCESSFUL', 'status');
  });
}

// --------------------------------------------------------------------------
// Flash call

async function flashCallFlow() {
  const number = randomNumber();
  let start;
  const started = await check('flashcall start', async () => {
    start = await verifications.startFlashCall({
      startVerificationWithFlashCallRequestBody: {
        identity: identity(number),
        flashCallOptions: { dialTimeout: 10 },
      },
    });
    expectId(start);
    // Lowercase discriminator (Java/.NET need it); the object key is camelCase.
    expectEq(start.method, 'flashcall', 'method');
    expect(start.flashCall && typeof start.flashCall.cliFilter === 'string' && start.flashCall.cliFilter.length > 0,
      `flashCall.cliFilter missing: ${JSON.stringify(start.flashCall)}`);
    expect(Number.isInteger(start.flashCall.interceptionTimeout),
      `flashCall.interceptionTimeout is not an integer: ${JSON.stringify(start.flashCall.interceptionTimeout)}`);
    expectLinks(start);
  });
  if (!started) return;

  let cli;
  const gotCli = await check('flashcall inbox CLI matches cliFilter', async () => {
    const msg = await inboxMessage(number, start.id);
    cli = msg.code;
    expect(typeof cli === 'string' && /^\+[1-9]\d{6,14}$/.test(cli), `inbox CLI is not E.164: ${JSON.stringify(cli)}`);
    expect(new RegExp(start.flashCall.cliFilter).test(cli),
      `cliFilter ${start.flashCall.cliFilter} does not match CLI ${cli}`);
  });
  if (!gotCli) return;

  await check('flashcall report by id -> SUCCESSFUL', async () => {
    const r = await verifications.reportFlashCallById({
      id: start.id,
      reportFlashCallVerificationByIdRequestBody: { flashCall: { cli } },
    });
    expectEq(r.method, 'flashcall', 'method');
    expectEq(r.status, 'SUCCESSFUL', 'status');
  });

  await check('flashcall status getByIdentity', async () => {
    const s = await status.getByIdentity({ endpoint: number, method: 'flashcall' });
    expectEq(s.id, start.id, 'id');
    expectEq(s.method, 'flashcall', 'method');
    expectEq(s.status, 'SUCCESSFUL', 'status');
    expectEq(s.callComplete, true, 'callComplete');
  });
}

// --------------------------------------------------------------------------
// Phone call (wire method "callout")

async function calloutFlow() {
  const number = randomNumber();
  let start;
  const started = await check('callout start (startPhoneCall)', async () => {
    start = await verifications.startPhoneCall({
      startVerificationWithPhoneCallRequestBody: {
        identity: identity(number),
        // SDK renames phoneCallOptions -> calloutOptions on the wire.
        phoneCallOptions: { speech: { locale: 'en-US' } },
      },
    });
    expectId(start);
    expectEq(start.method, 'callout', 'method');
    expectLinks(start);
  });
  if (!started) return;

  let code;
  const gotCode = await check('callout inbox code', async () => {
    const msg = await inboxMessage(number, start.id);
    code = msg.code;
    expect(typeof code === 'string' && code.length > 0, `inbox code missing: ${JSON.stringify(msg)}`);
  });
  if (!gotCode) return;

  await check('callout report by identity -> SUCCESSFUL', async () => {
    const r = await verifications.reportPhoneCallByIdentity({
      endpoint: number,
      // SDK renames phoneCall -> callout on the wire.
      reportPhoneCallVerificationByIdentityRequestBody: { phoneCall: { code } },
    });
    expectEq(r.id, start.id, 'id');
    expectEq(r.method, 'callout', 'method');
    expectEq(r.status, 'SUCCESSFUL', 'status');
  });

  await check('callout status getById', async () => {
    const s = await status.getById({ id: start.id });
    expectEq(s.id, start.id, 'id');
    expectEq(s.method, 'callout', 'method');
    expectEq(s.status, 'SUCCESSFUL', 'status');
  });
}

// --------------------------------------------------------------------------
// Data verification (wire method "seamless")

async function seamlessFlow() {
  const number = randomNumber();
  let start;
  const started = await check('seamless start (startData)', async () => {
    start = await verifications.startData({
      startDataVerificationRequestBody: { identity: identity(number) },
    });
    expectId(start);
    expectEq(start.method, 'seamless', 'method');
    expect(start.seamless && typeof start.seamless.targetUri === 'string' && /^https?:\/\//.test(start.seamless.targetUri),
      `seamless.targetUri missing/not absolute: ${JSON.stringify(start.seamless)}`);
  });
  if (!started) return;

  await check('seamless inbox message carries targetUri', async () => {
    const msg = await inboxMessage(number, start.id);
    expectEq(msg.body, start.seamless.targetUri, 'inbox body');
    expectEq(msg.code, null, 'inbox code');
  });

  const hit = await check('seamless GET targetUri -> 200', async () => {
    // What the handset does over mobile data; fetch follows redirects.
    const res = await fetch(start.seamless.targetUri);
    await res.arrayBuffer();
    expectEq(res.status, 200, 'HTTP status');
  });
  if (!hit) return;

  await check('seamless status getById -> SUCCESSFUL', async () => {
    // Node does not look at `method`, so a `seamless` status parses fine here
    // (Java/.NET could not represent it).
    const s = await status.getById({ id: start.id });
    expectEq(s.id, start.id, 'id');
    expectEq(s.method, 'seamless', 'method');
    expectEq(s.status, 'SUCCESSFUL', 'status');
  });
}

// --------------------------------------------------------------------------
// WhatsApp

async function whatsappFlow() {
  const number = randomNumber();
  let start;
  const started = await check('whatsapp start', async () => {
    start = await verifications.startWhatsApp({
      startVerificationWithWhatsAppRequestBody: {
        identity: identity(number),
        whatsappOptions: { codeType: 'Numeric' },
      },
    });
    expectId(start);
    expectEq(start.method, 'whatsapp', 'method');
    expectLinks(start);
  });
  if (!started) return;

  let code;
  const gotCode = await check('whatsapp inbox code', async () => {
    const msg = await inboxMessage(number, start.id);
    code = msg.code;
    expect(typeof code === 'string' && /^\d+$/.test(code), `codeType Numeric but inbox code is ${JSON.stringify(code)}`);
  });
  if (!gotCode) return;

  await check('whatsapp report by id -> SUCCESSFUL', async () => {
    const r = await verifications.reportWhatsAppById({
      id: start.id,
      reportWhatsAppVerificationByIdRequestBody: { whatsapp: { code } },
    });
    expectEq(r.method, 'whatsapp', 'method');
    expectEq(r.status, 'SUCCESSFUL', 'status');
  });
}

// --------------------------------------------------------------------------
// Errors

async function errorFlows() {
  await check('error: getById unknown id -> 404', () => expectSdkError(
    () => status.getById({ id: randomUUID() }), 404));

  await check('error: start with invalid number +4813 -> 400', () => expectSdkError(
    () => verifications.startSms({ startVerificationWithSmsRequestBody: { identity: identity('+4813') } }), 400));

  await check('error: wrong application secret -> 401', () => {
    let wrongSecret;
    do { wrongSecret = randomBytes(16).toString('base64'); } while (wrongSecret === SECRET);
    const badClient = new SinchClient({
      applicationKey: KEY,
      applicationSecret: wrongSecret,
      verificationHostname: BASE,
      logger: sdkLogger,
    });
    return expectSdkError(() => badClient.verification.verifications.startSms({
      startVerificationWithSmsRequestBody: { identity: identity(randomNumber()) },
    }), 401);
  });
}

// --------------------------------------------------------------------------

try {
  await smsFlow();
  await flashCallFlow();
  await calloutFlow();
  await seamlessFlow();
  await whatsappFlow();
  await errorFlows();
} catch (e) {
  notOk('unexpected harness error', describeError(e));
}
summary();
