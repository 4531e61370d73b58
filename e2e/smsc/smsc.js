#!/usr/bin/env node
// A real SMSC for verifyd's SMPP channel tests: node-smpp 0.5.1's server, scripted.
//
// Start:   npm ci --prefix e2e/smsc && SMSC_PORT=0 SMSC_LOG=/tmp/smsc.jsonl node e2e/smsc/smsc.js
// stdout:  exactly one line "listening <port>" once bound, then one answer line per control
//          command (below). Diagnostics go to stderr.
//
// Environment
//   SMSC_PORT              TCP port, 0 = any free port (default 2775)
//   SMSC_HOST              listen address (default 127.0.0.1)
//   SMSC_LOG               JSON-lines event log (default: no log)
//   SMSC_RECEIPTS          0 = never send delivery receipts (default 1)
//   SMSC_RECEIPT_DELAY_MS  delay before a receipt (default 100)
//   SMSC_RECEIPT_TLVS      0 = receipts carry only the text, no receipted_message_id /
//                          message_state TLVs (default 1)
//   SMSC_RESPONSE_DELAY_MS delay before each submit_sm_resp (default 0)
//   SMSC_BIND_DELAY_MS     delay before each bind response (default 0)
//   SMSC_THROTTLE_N        how many times a "throttle" destination is throttled (default 2)
//   SMSC_ID_FORMAT         "text" (default): ids "msg<n>" everywhere;
//                          "hex": submit_sm_resp and the receipted_message_id TLV carry the id
//                          in upper-case hex, the receipt text's "id:" the same number in
//                          zero-padded decimal (as some SMSCs do)
//   SMSC_PASSWORD          if set, binds with another password get ESME_RINVPASWD
//   SMSC_TLS_KEY, SMSC_TLS_CERT  PEM files: serve TLS instead of plain TCP
//   SMSC_EXIT_ON_STDIN_EOF 1 = exit when stdin closes (default 1)
//
// Failure injection by destination (the last three digits of destination_addr)
//   ...991  accepted, receipt stat:UNDELIV err:001 (message_state 5)
//   ...992  ESME_RTHROTTLED (0x58) for the first SMSC_THROTTLE_N submits to that number, then
//           accepted
//   ...993  ESME_RINVDSTADR (0x0B), a permanent error
//   ...994  ESME_RMSGQFUL (0x14) for the first SMSC_THROTTLE_N submits, then accepted
//   ...995  accepted, no receipt
//   ...996  accepted, receipt stat:EXPIRED err:000 (message_state 3)
//   ...997  accepted, an ACCEPTD receipt first, then DELIVRD
//   ...999  the connection is destroyed on receipt (no submit_sm_resp)
//   other   accepted, receipt stat:DELIVRD err:000 (message_state 2) after SMSC_RECEIPT_DELAY_MS
//
// Control channel: one JSON object per stdin line, one stdout line back.
//   {"cmd":"set", <any of the keys below>}                        -> "ok set"
//       receipts (bool), receipt_delay_ms, response_delay_ms, bind_delay_ms,
//       throttle_next (N: the next N submits get ESME_RTHROTTLED, whatever the destination),
//       drop_after (N: answer N more submits, then destroy the connection that carried the
//       Nth; submits arriving on it after that are discarded unanswered and logged as
//       "submit_sm_discarded")
//   {"cmd":"drop"}    destroy every connection now                  -> "ok drop"
//   {"cmd":"unbind"}  send unbind to every bound ESME               -> "ok unbind"
//   {"cmd":"mute"}    every current connection stops answering anything (a hung SMSC): its
//                     submits are logged as "submit_sm_ignored", its enquire_links go
//                     unanswered; new connections are not muted         -> "ok mute"
//   {"cmd":"stats"}   -> "stats {"binds":..,"submits":..,"accepted":..,"max_in_flight":..,
//                         "sessions":..,"bound":..}"
//
// Log events (one JSON object per line, "t" = ms since start):
//   bind_transceiver/bind_transmitter/bind_receiver {session, system_id, interface_version,
//     status}
//   submit_sm {session, seq, status, id (null when refused), src, src_ton, src_npi, dst,
//     dst_ton, dst_npi, text (decoded per data_coding, UDH stripped), udh ({ref, total, seq}
//     or null), data_coding, esm_class, registered_delivery, in_flight}
//   submit_sm_discarded {session, seq, dst}    submit_sm_ignored {session, seq, dst}
//   deliver_sm {session, id, stat}      deliver_sm_resp {session, id, status}
//   enquire_link {session}   unbind {session}   unbind_resp {session}
//   close {session}          drop {session, reason}

'use strict';

const fs = require('fs');
const readline = require('readline');
const smpp = require('smpp');

const env = process.env;
const num = (v, d) => (v === undefined || v === '' ? d : Number(v));

const settings = {
  receipts: env.SMSC_RECEIPTS !== '0',
  receipt_delay_ms: num(env.SMSC_RECEIPT_DELAY_MS, 100),
  receipt_tlvs: env.SMSC_RECEIPT_TLVS !== '0',
  response_delay_ms: num(env.SMSC_RESPONSE_DELAY_MS, 0),
  bind_delay_ms: num(env.SMSC_BIND_DELAY_MS, 0),
  throttle_n: num(env.SMSC_THROTTLE_N, 2),
  throttle_next: 0,
  drop_after: null,
};
const idFormat = env.SMSC_ID_FORMAT === 'hex' ? 'hex' : 'text';
const started = Date.now();
const logFd = env.SMSC_LOG ? fs.openSync(env.SMSC_LOG, 'a') : null;

function rec(o) {
  if (logFd === null) return;
  fs.writeSync(logFd, JSON.stringify({ t: Date.now() - started, ...o }) + '\n');
}

const stats = { binds: 0, submits: 0, accepted: 0, max_in_flight: 0 };
const sessions = new Set();
const throttledPerDst = new Map();
let nextSession = 1;
let nextId = 1;

function newIds() {
  const n = nextId++;
  if (idFormat === 'hex') {
    const value = 0xa0000 + n;
    return {
      resp: value.toString(16).toUpperCase(),
      text: String(value).padStart(10, '0'),
      tlv: value.toString(16).toUpperCase(),
    };
  }
  const id = 'msg' + n;
  return { resp: id, text: id, tlv: id };
}

function ts(d) {
  const p = (n) => String(n).padStart(2, '0');
  return `${String(d.getUTCFullYear()).slice(2)}${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}` +
    `${p(d.getUTCHours())}${p(d.getUTCMinutes())}`;
}

function parseUdh(list) {
  for (const ie of list || []) {
    if (ie[0] === 0x00 && ie[1] === 3) return { ref: ie[2], total: ie[3], seq: ie[4] };
    if (ie[0] === 0x08 && ie[1] === 4) return { ref: (ie[2] << 8) | ie[3], total: ie[4], seq: ie[5] };
  }
  return null;
}

function destroy(session, reason) {
  if (session.dropped) return;
  session.dropped = true;
  rec({ ev: 'drop', session: session.sid, reason });
  session.pause();
  session.destroy();
}

function sendReceipt(session, pdu, ids, stat, state, err, text) {
  const submitted = ts(new Date());
  const body = `id:${ids.text} sub:001 dlvrd:${stat === 'DELIVRD' ? '001' : '000'} ` +
    `submit date:${submitted} done date:${ts(new Date())} stat:${stat} err:${err} ` +
    `text:${text.slice(0, 20)}`;
  const options = {
    source_addr_ton: pdu.dest_addr_ton,
    source_addr_npi: pdu.dest_addr_npi,
    source_addr: pdu.destination_addr,
    dest_addr_ton: pdu.source_addr_ton,
    dest_addr_npi: pdu.source_addr_npi,
    destination_addr: pdu.source_addr,
    esm_class: 0x04,
    data_coding: 0,
    short_message: Buffer.from(body, 'latin1'),
  };
  if (settings.receipt_tlvs) {
    options.receipted_message_id = ids.tlv;
    options.message_state = state;
  }
  if (session.dropped || !session.bound) return;
  rec({ ev: 'deliver_sm', session: session.sid, id: ids.resp, stat });
  session.deliver_sm(options, (r) =>
    rec({ ev: 'deliver_sm_resp', session: session.sid, id: ids.resp, status: r.command_status }));
}

function onSubmit(session, pdu) {
  if (session.dropped || session.dropping) {
    rec({ ev: 'submit_sm_discarded', session: session.sid, seq: pdu.sequence_number, dst: pdu.destination_addr });
    return;
  }
  if (session.muted) {
    rec({ ev: 'submit_sm_ignored', session: session.sid, seq: pdu.sequence_number, dst: pdu.destination_addr });
    return;
  }
  stats.submits++;
  const dst = String(pdu.destination_addr || '');
  const suffix = dst.slice(-3);
  const sm = pdu.short_message || {};
  const text = typeof sm === 'object' && !Buffer.isBuffer(sm) ? String(sm.message ?? '') : String(sm);
  const udh = parseUdh(sm.udh);

  let status = smpp.ESME_ROK;
  if (suffix === '999') {
    destroy(session, 'destination ...999');
    return;
  } else if (settings.throttle_next > 0) {
    settings.throttle_next--;
    status = smpp.ESME_RTHROTTLED;
  } else if (suffix === '992' || suffix === '994') {
    const seen = throttledPerDst.get(dst) || 0;
    if (seen < settings.throttle_n) {
      throttledPerDst.set(dst, seen + 1);
      status = suffix === '992' ? smpp.ESME_RTHROTTLED : smpp.ESME_RMSGQFUL;
    }
  } else if (suffix === '993') {
    status = smpp.ESME_RINVDSTADR;
  }

  const ids = status === smpp.ESME_ROK ? newIds() : null;
  session.inFlight++;
  stats.max_in_flight = Math.max(stats.max_in_flight, session.inFlight);
  rec({
    ev: 'submit_sm', session: session.sid, seq: pdu.sequence_number, status,
    id: ids ? ids.resp : null, src: pdu.source_addr, src_ton: pdu.source_addr_ton,
    src_npi: pdu.source_addr_npi, dst, dst_ton: pdu.dest_addr_ton, dst_npi: pdu.dest_addr_npi,
    text, udh, data_coding: pdu.data_coding, esm_class: pdu.esm_class,
    registered_delivery: pdu.registered_delivery,
    in_flight: session.inFlight,
  });

  let dropAfterThis = false;
  if (status === smpp.ESME_ROK) {
    stats.accepted++;
    if (settings.drop_after !== null) {
      settings.drop_after--;
      if (settings.drop_after <= 0) {
        settings.drop_after = null;
        dropAfterThis = true;
        // Everything after this submit on this connection is discarded, unanswered.
        session.dropping = true;
      }
    }
  }

  const respond = () => {
    session.inFlight--;
    if (session.dropped) return;
    const resp = status === smpp.ESME_ROK
      ? pdu.response({ message_id: ids.resp })
      : pdu.response({ command_status: status });
    session.send(resp, () => {
      if (dropAfterThis) destroy(session, 'drop_after');
    });
    if (status !== smpp.ESME_ROK || !settings.receipts || !(pdu.registered_delivery & 1)) return;
    if (suffix === '995') return;
    const later = (ms, f) => setTimeout(f, ms);
    if (suffix === '991') {
      later(settings.receipt_delay_ms, () => sendReceipt(session, pdu, ids, 'UNDELIV', 5, '001', text));
    } else if (suffix === '996') {
      later(settings.receipt_delay_ms, () => sendReceipt(session, pdu, ids, 'EXPIRED', 3, '000', text));
    } else if (suffix === '997') {
      later(settings.receipt_delay_ms, () => sendReceipt(session, pdu, ids, 'ACCEPTD', 6, '000', text));
      later(settings.receipt_delay_ms * 2, () => sendReceipt(session, pdu, ids, 'DELIVRD', 2, '000', text));
    } else {
      later(settings.receipt_delay_ms, () => sendReceipt(session, pdu, ids, 'DELIVRD', 2, '000', text));
    }
  };
  if (settings.response_delay_ms > 0) setTimeout(respond, settings.response_delay_ms);
  else respond();
}

function onSession(session) {
  // Answer pipelined submits at once, as real SMSCs do (no Nagle delay).
  session.socket.setNoDelay(true);
  session.sid = nextSession++;
  session.inFlight = 0;
  session.bound = false;
  session.dropped = false;
  session.muted = false;
  sessions.add(session);
  session.on('close', () => {
    sessions.delete(session);
    rec({ ev: 'close', session: session.sid });
  });
  session.on('error', (e) => process.stderr.write(`session ${session.sid}: ${e.message}\n`));
  for (const b of ['bind_transceiver', 'bind_transmitter', 'bind_receiver']) {
    session.on(b, (pdu) => {
      stats.binds++;
      let status = smpp.ESME_ROK;
      if (env.SMSC_PASSWORD !== undefined && pdu.password !== env.SMSC_PASSWORD) status = smpp.ESME_RINVPASWD;
      rec({ ev: b, session: session.sid, system_id: pdu.system_id, interface_version: pdu.interface_version, status });
      const answer = () => {
        if (status === smpp.ESME_ROK) {
          session.bound = true;
          session.send(pdu.response({ system_id: 'NODESMSC' }));
        } else {
          session.send(pdu.response({ command_status: status }));
        }
      };
      if (settings.bind_delay_ms > 0) setTimeout(answer, settings.bind_delay_ms);
      else answer();
    });
  }
  session.on('enquire_link', (pdu) => {
    rec({ ev: 'enquire_link', session: session.sid });
    if (!session.dropped && !session.muted) session.send(pdu.response());
  });
  session.on('unbind', (pdu) => {
    rec({ ev: 'unbind', session: session.sid });
    session.bound = false;
    session.send(pdu.response());
    session.close();
  });
  session.on('unbind_resp', () => {
    rec({ ev: 'unbind_resp', session: session.sid });
    session.close();
  });
  session.on('submit_sm', (pdu) => onSubmit(session, pdu));
}

const tlsOptions = env.SMSC_TLS_KEY && env.SMSC_TLS_CERT
  ? { key: fs.readFileSync(env.SMSC_TLS_KEY), cert: fs.readFileSync(env.SMSC_TLS_CERT) }
  : {};
const server = smpp.createServer(tlsOptions, onSession);
server.on('error', (e) => {
  process.stderr.write(`server: ${e.message}\n`);
  process.exit(1);
});
server.listen(num(env.SMSC_PORT, 2775), env.SMSC_HOST || '127.0.0.1', () => {
  process.stdout.write(`listening ${server.address().port}\n`);
});

const control = readline.createInterface({ input: process.stdin });
control.on('line', (line) => {
  if (!line.trim()) return;
  let msg;
  try {
    msg = JSON.parse(line);
  } catch (e) {
    process.stdout.write(`error ${JSON.stringify(e.message)}\n`);
    return;
  }
  switch (msg.cmd) {
    case 'set':
      for (const k of ['receipts', 'receipt_delay_ms', 'response_delay_ms', 'bind_delay_ms', 'throttle_next', 'drop_after']) {
        if (k in msg) settings[k] = msg[k];
      }
      process.stdout.write('ok set\n');
      break;
    case 'drop':
      for (const s of [...sessions]) destroy(s, 'control');
      process.stdout.write('ok drop\n');
      break;
    case 'unbind':
      for (const s of [...sessions]) if (s.bound && !s.dropped) { s.bound = false; s.unbind(); }
      process.stdout.write('ok unbind\n');
      break;
    case 'mute':
      for (const s of [...sessions]) s.muted = true;
      process.stdout.write('ok mute\n');
      break;
    case 'stats':
      process.stdout.write(`stats ${JSON.stringify({ ...stats, sessions: sessions.size, bound: [...sessions].filter((s) => s.bound && !s.dropped).length })}\n`);
      break;
    default:
      process.stdout.write(`error ${JSON.stringify('unknown cmd')}\n`);
  }
});
control.on('close', () => {
  if (env.SMSC_EXIT_ON_STDIN_EOF !== '0') process.exit(0);
});
