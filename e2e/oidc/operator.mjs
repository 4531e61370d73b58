// A mobile operator for verifyd's CAMARA Number Verification tests.
//
// - The authorization server is the real `oidc-provider` 9.13.3 (panva, OpenID Certified).
//   verifyd is registered as a confidential client with `private_key_jwt` (its public key
//   read from CLIENT_KEY_FILE), one redirect URI, the authorization-code grant only, and
//   PKCE required.
// - "Authentication by the network": the login prompt has a single check that maps the
//   TCP source address of the authorization request to a subscriber (DEVICES), the way an
//   operator maps a data session's IP to an MSISDN. A known device is logged in without
//   interaction and its grant covers the requested scopes (the purpose was agreed at
//   onboarding); an unknown one fails the check, so `prompt=none` answers `login_required`.
// - The Number Verification resource server (`POST /verify`, on API_PORT or an ephemeral
//   port) checks the Bearer token with the provider itself: it must be a live access token
//   of this provider carrying `number-verification:verify`, and it is single-use (destroyed
//   on use). The posted number is compared with the token's subscriber. A subscriber whose
//   session was not authenticated by the network (amr without "nba") gets 403
//   NUMBER_VERIFICATION.USER_NOT_AUTHENTICATED_BY_MOBILE_NETWORK. Tests put Prism in proxy
//   mode in front of it, so both the request and the answer are checked against the CAMARA
//   OpenAPI document.
//
// Environment:
//   OPERATOR_PORT   port of the authorization server on 127.0.0.1 (0: ephemeral)
//   API_PORT        port of the resource server on 127.0.0.1 (0: ephemeral)
//   CLIENT_ID       verifyd's client id
//   CLIENT_KEY_FILE PEM (private or public) of verifyd's client key
//   CLIENT_KEY_ID   optional kid of that key
//   REDIRECT_URI    verifyd's callback URL (several: comma-separated)
//   DEVICES         JSON: {"127.0.0.2": {"msisdn": "+46700007001", "amr": ["nba"]}, ...}
//
// Output: one JSON object per line on stdout. First
//   {"event":"ready","issuer":"http://127.0.0.1:P","api":"http://127.0.0.1:Q"}
// then one line per authorization request, token request (success or error) and /verify
// call. Codes, tokens and assertions are never printed, only facts about them.

import { createHash, createPublicKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';

import Provider, { interactionPolicy } from 'oidc-provider';

const { Check, Prompt, base: basePolicy } = interactionPolicy;

const env = (name, fallback) => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) {
    console.error(`operator.mjs: ${name} is required`);
    process.exit(2);
  }
  return value;
};

const log = (fields) => process.stdout.write(`${JSON.stringify(fields)}\n`);

const clientId = env('CLIENT_ID');
const redirectUri = env('REDIRECT_URI'); // comma-separated when several
const devices = JSON.parse(env('DEVICES'));
const clientJwk = {
  ...createPublicKey(readFileSync(env('CLIENT_KEY_FILE'))).export({ format: 'jwk' }),
  use: 'sig',
  ...(process.env.CLIENT_KEY_ID ? { kid: process.env.CLIENT_KEY_ID } : {}),
};

// The operator's own ID-token signing key, fresh per run.
const signingJwk = {
  ...generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' }),
  kid: `op-${randomBytes(4).toString('hex')}`,
  alg: 'RS256',
  use: 'sig',
};

// grant id -> authentication methods of the login it came from (for the /verify AMR check).
const grantAmr = new Map();

const NETWORK_AMR = 'nba';
const VERIFY_SCOPE = 'number-verification:verify';

const listen = (server, port) => new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(port, '127.0.0.1', () => resolve(server.address().port));
});

// The authorization server is created once its port (and so its issuer) is known.
let provider;
const authServer = http.createServer((req, res) => provider.callback()(req, res));
const authPort = await listen(authServer, Number(env('OPERATOR_PORT', '0')));
const issuer = `http://127.0.0.1:${authPort}`;

// Subscribers are known by their MSISDN.
const findAccount = async (ctx, sub) => ({ accountId: sub, claims: () => ({ sub, phone_number: sub }) });

const networkAuthentication = new Check(
  'network_authentication',
  'the device is not attached to this mobile network',
  'login_required',
  async (ctx) => {
    const { oidc } = ctx;
    const device = devices[ctx.ip];
    if (!device) {
      return Check.REQUEST_PROMPT;
    }
    oidc.session.loginAccount({ accountId: device.msisdn, amr: device.amr ?? [NETWORK_AMR] });
    oidc.entity('Account', await findAccount(ctx, device.msisdn));
    const grant = new provider.Grant({ accountId: device.msisdn, clientId: oidc.client.clientId });
    grant.addOIDCScope([...oidc.requestParamScopes].join(' '));
    const grantId = await grant.save();
    oidc.session.ensureClientContainer(oidc.client.clientId);
    oidc.session.grantIdFor(oidc.client.clientId, grantId);
    oidc.entity('Grant', grant);
    grantAmr.set(grantId, device.amr ?? [NETWORK_AMR]);
    return Check.NO_NEED_TO_PROMPT;
  },
);

const policy = basePolicy();
policy.clear();
policy.add(new Prompt({ name: 'login', requestable: true }, networkAuthentication));

provider = new Provider(issuer, {
  clients: [{
    client_id: clientId,
    token_endpoint_auth_method: 'private_key_jwt',
    jwks: { keys: [clientJwk] },
    redirect_uris: redirectUri.split(','),
    grant_types: ['authorization_code'],
    response_types: ['code'],
  }],
  jwks: { keys: [signingJwk] },
  scopes: ['openid', 'dpv:FraudPreventionAndDetection', VERIFY_SCOPE],
  claims: { openid: ['sub'], phone: ['phone_number'] },
  pkce: { required: () => true },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  interactions: {
    policy,
    url: () => { throw new Error('this operator never interacts with the user'); },
  },
  features: { devInteractions: { enabled: false } },
  // Number Verification tokens live at most 300 s and come without a refresh token.
  ttl: { AccessToken: 300, AuthorizationCode: 60, IdToken: 300, Grant: 300, Session: 300 },
  findAccount,
});
provider.proxy = false;

provider.use(async (ctx, next) => {
  if (ctx.path === '/auth') {
    const q = ctx.query;
    log({
      event: 'authorization.request',
      ip: ctx.ip,
      response_type: q.response_type,
      client_id: q.client_id,
      redirect_uri: q.redirect_uri,
      scope: q.scope,
      prompt: q.prompt,
      login_hint_present: q.login_hint !== undefined,
      state_present: q.state !== undefined,
      nonce_present: q.nonce !== undefined,
      code_challenge_method: q.code_challenge_method,
      code_challenge_present: q.code_challenge !== undefined,
    });
  }
  await next();
});
provider.on('authorization.success', (ctx) => log({ event: 'authorization.success', ip: ctx.ip }));
provider.on('authorization.error', (ctx, err) => log({ event: 'authorization.error', ip: ctx.ip, error: err.error, description: err.error_description }));
provider.on('grant.success', (ctx) => log({
  event: 'grant.success',
  client_id: ctx.oidc.client.clientId,
  client_auth_method: ctx.oidc.client.clientAuthMethod,
  client_assertion_type: ctx.oidc.params.client_assertion_type,
  code_verifier_present: ctx.oidc.params.code_verifier !== undefined,
}));
provider.on('server_error', (ctx, err) => log({ event: 'server_error', path: ctx.path, message: String(err?.stack ?? err) }));
provider.on('grant.error', (ctx, err) => log({ event: 'grant.error', error: err.error, description: err.error_description, detail: err.error_detail ?? err.cause?.message }));

// ---- the Number Verification API --------------------------------------------------------

const camaraError = (res, status, code, message, correlator) => {
  res.writeHead(status, {
    'content-type': 'application/json',
    ...(correlator ? { 'x-correlator': correlator } : {}),
  });
  res.end(JSON.stringify({ status, code, message }));
};

const readBody = (req) => new Promise((resolve, reject) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
  req.on('error', reject);
});

const apiServer = http.createServer(async (req, res) => {
  const correlator = req.headers['x-correlator'];
  try {
    if (req.method !== 'POST' || req.url !== '/verify') {
      return camaraError(res, 404, 'NOT_FOUND', 'The specified resource is not found.', correlator);
    }
    const raw = await readBody(req);
    const auth = req.headers.authorization ?? '';
    const bearer = auth.startsWith('Bearer ') ? auth.slice(7) : undefined;
    const token = bearer && await provider.AccessToken.find(bearer);
    const entry = {
      event: 'verify',
      correlator,
      content_type: req.headers['content-type'],
      bearer_present: bearer !== undefined,
      token_valid: Boolean(token),
      body_keys: (() => { try { return Object.keys(JSON.parse(raw)); } catch { return null; } })(),
    };
    if (!token) {
      log({ ...entry, answer: 401 });
      return camaraError(res, 401, 'UNAUTHENTICATED', 'Request not authenticated due to missing, invalid, or expired credentials.', correlator);
    }
    // Single use: whatever the outcome, this token is spent.
    await token.destroy();
    if (!token.scopes.has(VERIFY_SCOPE)) {
      log({ ...entry, answer: 403 });
      return camaraError(res, 403, 'PERMISSION_DENIED', 'Client does not have sufficient permissions to perform this action.', correlator);
    }
    if (!(grantAmr.get(token.grantId) ?? []).includes(NETWORK_AMR)) {
      log({ ...entry, answer: 403 });
      return camaraError(res, 403, 'NUMBER_VERIFICATION.USER_NOT_AUTHENTICATED_BY_MOBILE_NETWORK', 'Client must authenticate via the mobile network to use this service', correlator);
    }
    let body;
    try {
      body = JSON.parse(raw);
    } catch {
      log({ ...entry, answer: 400 });
      return camaraError(res, 400, 'INVALID_ARGUMENT', 'Client specified an invalid argument, request body or query param', correlator);
    }
    const subscriber = token.accountId;
    const verified = body.phoneNumber !== undefined
      ? body.phoneNumber === subscriber
      : body.hashedPhoneNumber?.toLowerCase() === createHash('sha256').update(subscriber).digest('hex');
    log({ ...entry, answer: 200, verified });
    res.writeHead(200, {
      'content-type': 'application/json',
      ...(correlator ? { 'x-correlator': correlator } : {}),
    });
    return res.end(JSON.stringify({ devicePhoneNumberVerified: verified }));
  } catch (err) {
    log({ event: 'verify.crash', message: String(err?.message ?? err) });
    return camaraError(res, 500, 'INTERNAL', 'Server error', correlator);
  }
});
const apiPort = await listen(apiServer, Number(env('API_PORT', '0')));

log({ event: 'ready', issuer, api: `http://127.0.0.1:${apiPort}` });

const stop = () => { authServer.close(); apiServer.close(); process.exit(0); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
