// A real OpenID provider (panva's oidc-provider 8.x) for authgate's interop tests.
//
// Started by tests/oidc_provider.py; listens on 127.0.0.1 only.
//
//   node provider.js [--port N] [--jwks-file PATH]
//   env: OIDC_PORT (default 0 = any free port), OIDC_JWKS_FILE, OIDC_SHORT_TTL (default 3)
//
// When ready it prints ONE JSON line on stdout:
//   {"event": "ready", "issuer": "http://127.0.0.1:PORT", "port": PORT, "kids": [...]}
//
// Control: one JSON command per line on stdin, one JSON answer per line on stdout.
//   {"cmd": "rotate", "keep_old": true}   new RS256/ES256/EdDSA keys sign from now on; with
//                                         keep_old the previous keys stay in the JWKS (for
//                                         verifying tokens already issued), without they go.
//   {"cmd": "jwks"}                       the current public JWKS
//   -> {"event": "rotated", "kids": [...]} / {"event": "jwks", "jwks": {...}}
//   -> {"event": "error", "error": "..."} for an unknown or broken command
// Rotation swaps in a new Provider instance behind the same listening socket; tokens live
// in a module-level in-memory store shared by every instance, so opaque tokens issued before
// a rotation stay introspectable and revocable. Closing stdin stops the provider.
//
// With --jwks-file the private JWKS is read from that file when it exists (otherwise
// generated and written there) and rewritten on every rotation, so a restart on the same
// port can keep the keys (keep the file) or get new ones (delete the file first).

import { createHash, generateKeyPairSync } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createInterface } from 'node:readline';

import Provider, { errors } from 'oidc-provider';

const HOST = '127.0.0.1';

function argValue(name) {
  const i = process.argv.indexOf(name);
  return i !== -1 && i + 1 < process.argv.length ? process.argv[i + 1] : undefined;
}

const requestedPort = Number(argValue('--port') ?? process.env.OIDC_PORT ?? 0);
const jwksFile = argValue('--jwks-file') ?? process.env.OIDC_JWKS_FILE;
const shortTTL = Number(process.env.OIDC_SHORT_TTL ?? 3);
if (!Number.isInteger(requestedPort) || requestedPort < 0 || requestedPort > 65535) {
  process.stderr.write(`invalid port: ${requestedPort}\n`);
  process.exit(2);
}

// ---------------------------------------------------------------------------------------
// Keys

// RFC 7638 thumbprint (members in lexicographic order), the same value oidc-provider would
// compute for a key without a kid.
function thumbprint(jwk) {
  let members;
  switch (jwk.kty) {
    case 'RSA': members = { e: jwk.e, kty: jwk.kty, n: jwk.n }; break;
    case 'EC': members = {
      crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y,
    }; break;
    case 'OKP': members = { crv: jwk.crv, kty: jwk.kty, x: jwk.x }; break;
    default: throw new Error(`unsupported kty ${jwk.kty}`);
  }
  return createHash('sha256').update(JSON.stringify(members)).digest('base64url');
}

function privateJwk(type, options, alg) {
  const { privateKey } = generateKeyPairSync(type, options);
  const jwk = privateKey.export({ format: 'jwk' });
  return {
    ...jwk, kid: thumbprint(jwk), alg, use: 'sig',
  };
}

function generateKeys() {
  // Order matters: oidc-provider signs with the first key that fits the algorithm.
  return [
    privateJwk('rsa', { modulusLength: 2048 }, 'RS256'),
    privateJwk('ec', { namedCurve: 'P-256' }, 'ES256'),
    privateJwk('ed25519', {}, 'EdDSA'),
  ];
}

function loadOrCreateJwks() {
  if (jwksFile && existsSync(jwksFile)) {
    const jwks = JSON.parse(readFileSync(jwksFile, 'utf8'));
    if (!jwks || !Array.isArray(jwks.keys) || jwks.keys.length === 0) {
      throw new Error(`${jwksFile} is not a JWKS with keys`);
    }
    return jwks;
  }
  const jwks = { keys: generateKeys() };
  saveJwks(jwks);
  return jwks;
}

function saveJwks(jwks) {
  if (jwksFile) writeFileSync(jwksFile, `${JSON.stringify(jwks, null, 2)}\n`, { mode: 0o600 });
}

// ---------------------------------------------------------------------------------------
// Storage shared by every Provider instance (so rotation keeps issued tokens)

const store = new Map(); // key -> { payload, expiresAt (ms) }

function storeGet(key) {
  const entry = store.get(key);
  if (!entry) return undefined;
  if (entry.expiresAt !== undefined && entry.expiresAt <= Date.now()) {
    store.delete(key);
    return undefined;
  }
  return entry.payload;
}

function storeSet(key, payload, expiresIn) {
  // Bounded: a test run never gets near this, but a runaway loop cannot eat the memory.
  if (store.size >= 10000) store.delete(store.keys().next().value);
  store.set(key, {
    payload,
    expiresAt: expiresIn ? Date.now() + expiresIn * 1000 : undefined,
  });
}

const GRANTABLE = new Set([
  'AccessToken', 'AuthorizationCode', 'RefreshToken', 'DeviceCode',
  'BackchannelAuthenticationRequest',
]);

class SharedMemoryAdapter {
  constructor(model) { this.model = model; }

  key(id) { return `${this.model}:${id}`; }

  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    if (this.model === 'Session') storeSet(`sessionUid:${payload.uid}`, id, expiresIn);
    if (GRANTABLE.has(this.model) && payload.grantId) {
      const grantKey = `grant:${payload.grantId}`;
      const keys = storeGet(grantKey);
      if (keys) keys.push(key); else storeSet(grantKey, [key]);
    }
    if (payload.userCode) storeSet(`userCode:${payload.userCode}`, id, expiresIn);
    storeSet(key, payload, expiresIn);
  }

  async find(id) { return storeGet(this.key(id)); }

  async findByUid(uid) {
    const id = storeGet(`sessionUid:${uid}`);
    return id === undefined ? undefined : this.find(id);
  }

  async findByUserCode(userCode) {
    const id = storeGet(`userCode:${userCode}`);
    return id === undefined ? undefined : this.find(id);
  }

  async consume(id) {
    const payload = storeGet(this.key(id));
    if (payload) payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) { store.delete(this.key(id)); }

  // eslint-disable-next-line class-methods-use-this
  async revokeByGrantId(grantId) {
    const grantKey = `grant:${grantId}`;
    (storeGet(grantKey) || []).forEach((key) => store.delete(key));
    store.delete(grantKey);
  }
}

// ---------------------------------------------------------------------------------------
// Resource servers (RFC 8707 resource indicators)

const SCOPE = 'read write';
const RESOURCE_SERVERS = {
  // JWT access tokens (RFC 9068, typ at+jwt), aud = the resource URI.
  'https://api.example.test': { scope: SCOPE, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } } },
  'https://es256.example.test': { scope: SCOPE, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'ES256' } } },
  'https://eddsa.example.test': { scope: SCOPE, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'EdDSA' } } },
  'https://short-jwt.example.test': {
    scope: SCOPE, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } }, accessTokenTTL: shortTTL,
  },
  // Opaque access tokens (checked by RFC 7662 introspection), aud = the resource URI.
  'https://opaque.example.test': { scope: SCOPE, accessTokenFormat: 'opaque' },
  'https://short-opaque.example.test': {
    scope: SCOPE, accessTokenFormat: 'opaque', accessTokenTTL: shortTTL,
  },
};

function resourceServerInfo(resource) {
  if (Object.hasOwn(RESOURCE_SERVERS, resource)) return RESOURCE_SERVERS[resource];
  // Any http URL on the loopback (a test's own app server): a JWT (RS256) for that audience.
  try {
    const url = new URL(resource);
    if (url.protocol === 'http:' && ['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname)) {
      return { scope: SCOPE, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } } };
    }
  } catch {
    // not a URL: unknown resource
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------
// Clients

const INTROSPECTORS = new Set(['rs']);

const CLIENTS = [
  {
    client_id: 'svc',
    client_secret: 'svc-secret',
    token_endpoint_auth_method: 'client_secret_basic',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    scope: SCOPE,
  },
  {
    client_id: 'svc-post',
    client_secret: 'svc-post-secret',
    token_endpoint_auth_method: 'client_secret_post',
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    scope: SCOPE,
  },
  {
    // The resource server: only authenticates to the introspection endpoint.
    client_id: 'rs',
    client_secret: 'rs-secret',
    token_endpoint_auth_method: 'client_secret_basic',
    introspection_endpoint_auth_method: 'client_secret_basic',
    grant_types: [],
    response_types: [],
    redirect_uris: [],
  },
];

// ---------------------------------------------------------------------------------------
// Provider

let port = requestedPort;
let issuer;
let current; // { provider, jwks, callback }

function buildProvider(jwks) {
  const provider = new Provider(issuer, {
    adapter: SharedMemoryAdapter,
    clients: CLIENTS,
    jwks,
    // Fixed cookie keys: no "cookies.keys is missing" warning (no cookies are used anyway).
    cookies: { keys: ['authgate-test-cookie-key'] },
    scopes: ['openid', 'read', 'write'],
    clientDefaults: {
      grant_types: ['client_credentials'],
      response_types: [],
      id_token_signed_response_alg: 'RS256',
      token_endpoint_auth_method: 'client_secret_basic',
    },
    ttl: {
      AccessToken: (ctx, token) => token.resourceServer?.accessTokenTTL || 300,
      ClientCredentials: (ctx, token) => token.resourceServer?.accessTokenTTL || 300,
      Grant: 3600,
      IdToken: 300,
      Interaction: 300,
      Session: 3600,
      RefreshToken: 3600,
    },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: {
        enabled: true,
        // `rs` may introspect every token; any other client only its own tokens.
        allowedPolicy: async (ctx, client, token) => (
          INTROSPECTORS.has(client.clientId) || token.clientId === client.clientId
        ),
      },
      revocation: { enabled: true },
      dPoP: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (ctx, client, oneOf) => oneOf ?? undefined,
        useGrantedResource: async () => false,
        getResourceServerInfo: async (ctx, resource) => {
          const info = resourceServerInfo(resource);
          if (!info) throw new errors.InvalidTarget();
          return info;
        },
      },
    },
  });
  // Plain http on loopback: no proxy; oidc-provider then takes the protocol from the socket.
  provider.proxy = false;
  for (const event of ['server_error', 'grant.error', 'introspection.error', 'revocation.error']) {
    provider.on(event, (ctx, err) => {
      process.stderr.write(`[oidc] ${event}: ${err?.name} ${err?.message} ${err?.error_description ?? ''}\n`);
    });
  }
  return { provider, jwks, callback: provider.callback() };
}

function publicKids(jwks) { return jwks.keys.map((k) => k.kid); }

function publicJwks(jwks) {
  return {
    keys: jwks.keys.map(({
      d, p, q, dp, dq, qi, ...pub
    }) => pub),
  };
}

function rotate(keepOld) {
  const fresh = generateKeys();
  const jwks = { keys: keepOld ? [...fresh, ...current.jwks.keys] : fresh };
  current = buildProvider(jwks); // throws before the swap if the key set is unusable
  saveJwks(jwks);
  return publicKids(jwks);
}

function emit(obj) { process.stdout.write(`${JSON.stringify(obj)}\n`); }

const server = createServer((req, res) => current.callback(req, res));
server.keepAliveTimeout = 5000;

server.on('error', (err) => {
  process.stderr.write(`[oidc] listen error: ${err.message}\n`);
  process.exit(1);
});

server.listen(port, HOST, () => {
  port = server.address().port;
  issuer = `http://${HOST}:${port}`;
  try {
    current = buildProvider(loadOrCreateJwks());
  } catch (err) {
    process.stderr.write(`[oidc] startup failed: ${err.stack}\n`);
    process.exit(1);
  }
  emit({
    event: 'ready', issuer, port, kids: publicKids(current.jwks),
  });
});

const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  if (!line.trim()) return;
  try {
    const command = JSON.parse(line);
    switch (command.cmd) {
      case 'rotate':
        emit({ event: 'rotated', kids: rotate(command.keep_old !== false) });
        break;
      case 'jwks':
        emit({ event: 'jwks', jwks: publicJwks(current.jwks) });
        break;
      default:
        emit({ event: 'error', error: `unknown command ${JSON.stringify(command.cmd)}` });
    }
  } catch (err) {
    emit({ event: 'error', error: String(err?.message ?? err) });
  }
});

function shutdown() {
  server.close();
  server.closeAllConnections?.();
  // Do not wait for slow clients: the test asked us to go.
  setTimeout(() => process.exit(0), 1000).unref();
}

rl.on('close', shutdown);
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
