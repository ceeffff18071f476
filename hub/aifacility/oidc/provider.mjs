// The embedded OpenID Connect provider of aifacility, for `aifacility up` and the tests.
//
// It is panva's `oidc-provider` (an OpenID Certified implementation) configured to behave like INDIGO IAM
// for the facility's client: discovery, authorization code with PKCE (S256, required), refresh tokens,
// `groups` and `wlcg.groups` claims, configurable token lifetimes, and a username/password login page.
// Everything it needs comes from one JSON file written by the Python launcher
// (`aifacility.oidc.launcher.EmbeddedOIDCProvider`); its grants and tokens are kept in `<state_dir>/store.json` and `store.journal`
// so that a restart of the provider does not log everybody out.
//
// Usage: node provider.mjs <config.json>
import { createServer } from 'node:http';
import { appendFileSync, readFileSync, writeFileSync, renameSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { timingSafeEqual, createHash } from 'node:crypto';
import Provider from 'oidc-provider';

const conf = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const users = new Map(conf.users.map((u) => [u.username, u]));

// ---- persistence: a snapshot file plus an append-only journal ----
// Every change is appended to the journal before the provider answers (one line, O(1)), so a provider killed at
// any moment restarts with every grant and token it gave out. Rewriting the whole store on each change instead
// made a login cost O(all logins so far): under 200 logins the provider became the facility's bottleneck.
// When the journal outgrows JOURNAL_LIMIT the store is written as a new snapshot and the journal emptied; a crash
// between the two only replays changes the snapshot already holds.
const storePath = join(conf.state_dir, 'store.json');
const journalPath = join(conf.state_dir, 'store.journal');
const JOURNAL_LIMIT = 4 * 1024 * 1024;
const now = () => Math.floor(Date.now() / 1000);
let store = existsSync(storePath) ? JSON.parse(readFileSync(storePath, 'utf8')) : {};
let journalBytes = 0;
if (existsSync(journalPath)) {
  const text = readFileSync(journalPath, 'utf8');
  journalBytes = Buffer.byteLength(text);
  for (const line of text.split('\n')) {
    let change;
    try { change = JSON.parse(line); } catch { continue; } // the last line may be cut short by a crash
    if (change.v === null) delete store[change.k]; else store[change.k] = change.v;
  }
}
function compact() {
  // Drop expired entries, then replace the snapshot atomically so a crash never leaves half a file.
  const t = now();
  for (const key of Object.keys(store)) if (store[key].exp && store[key].exp < t) delete store[key];
  writeFileSync(`${storePath}.tmp`, JSON.stringify(store), { mode: 0o600 });
  renameSync(`${storePath}.tmp`, storePath);
  writeFileSync(journalPath, '', { mode: 0o600 });
  journalBytes = 0;
}
function record(...keys) {
  const lines = keys.map((k) => `${JSON.stringify({ k, v: store[k] ?? null })}\n`).join('');
  appendFileSync(journalPath, lines, { mode: 0o600 });
  journalBytes += Buffer.byteLength(lines);
  if (journalBytes > JOURNAL_LIMIT) compact();
}
compact(); // start from one snapshot: expired entries go, the journal starts empty
class FileAdapter {
  constructor(model) { this.model = model; }
  key(id) { return `${this.model}:${id}`; }
  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    store[key] = { payload, exp: expiresIn ? now() + expiresIn : undefined };
    if (!payload.grantId) return record(key);
    const ref = `grant:${payload.grantId}:${key}`;
    store[ref] = { ref: key, exp: store[key].exp };
    record(key, ref);
  }
  async find(id) {
    const e = store[this.key(id)];
    if (!e || (e.exp && e.exp < now())) return undefined;
    return e.payload;
  }
  async findByUid(uid) {
    for (const e of Object.values(store)) if (e.payload?.uid === uid && e.payload.kind === this.model) return e.payload;
    return undefined;
  }
  async findByUserCode(userCode) {
    for (const e of Object.values(store)) if (e.payload?.userCode === userCode && e.payload.kind === this.model) return e.payload;
    return undefined;
  }
  async consume(id) {
    const e = store[this.key(id)];
    if (e) { e.payload.consumed = now(); record(this.key(id)); }
  }
  async destroy(id) { delete store[this.key(id)]; record(this.key(id)); }
  async revokeByGrantId(grantId) {
    const gone = [];
    for (const k of Object.keys(store)) {
      if (k.startsWith(`grant:${grantId}:`)) { gone.push(store[k].ref, k); delete store[store[k].ref]; delete store[k]; }
    }
    if (gone.length) record(...gone);
  }
}

// ---- accounts: the IAM-like claims of each user ----
function claimsOf(user) {
  return {
    sub: user.sub,
    preferred_username: user.username,
    name: user.name,
    given_name: user.name.split(' ')[0],
    family_name: user.name.split(' ').slice(1).join(' ') || user.name,
    email: user.email,
    email_verified: true,
    organisation_name: conf.organisation,
    // INDIGO IAM sends both: plain names in `groups`, and WLCG paths with a leading slash in `wlcg.groups`.
    groups: user.groups,
    'wlcg.groups': user.groups.map((g) => `/${g}`),
  };
}
const bySub = new Map(conf.users.map((u) => [u.sub, u]));

const configuration = {
  adapter: FileAdapter,
  clients: [{
    client_id: conf.client.client_id,
    client_secret: conf.client.client_secret,
    redirect_uris: conf.client.redirect_uris,
    post_logout_redirect_uris: conf.client.post_logout_redirect_uris ?? [],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_post',
  }],
  jwks: { keys: [conf.signing_key] },
  cookies: { keys: conf.cookie_keys },
  scopes: ['openid', 'profile', 'email', 'offline_access', 'wlcg.groups', 'groups'],
  claims: {
    openid: ['sub'],
    profile: ['name', 'given_name', 'family_name', 'preferred_username', 'organisation_name', 'groups'],
    email: ['email', 'email_verified'],
    'wlcg.groups': ['wlcg.groups'],
    groups: ['groups'],
  },
  // IAM puts the requested claims in the ID token as well as in userinfo.
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: {
    devInteractions: { enabled: false },
    rpInitiatedLogout: { enabled: true },
    revocation: { enabled: true },
    introspection: { enabled: true },
  },
  // IAM hands a refresh token to a client allowed the refresh_token grant that asks for offline_access, without
  // insisting on prompt=consent as the OIDC core text does; OAuthenticator never sends a prompt.
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  expiresWithSession: async () => false,
  rotateRefreshToken: true,
  ttl: {
    AccessToken: conf.ttl.access_token,
    IdToken: conf.ttl.id_token,
    RefreshToken: conf.ttl.refresh_token,
    AuthorizationCode: 60,
    Interaction: 600,
    Session: 86400,
    Grant: conf.ttl.refresh_token,
  },
  findAccount: async (ctx, sub) => {
    const user = bySub.get(sub);
    if (!user) return undefined;
    return { accountId: sub, claims: async () => claimsOf(user) };
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  renderError: async (ctx, out) => {
    ctx.type = 'html';
    ctx.body = page('Login error', `<p class="error">${esc(out.error)}: ${esc(out.error_description ?? '')}</p>
      <p>Go back to the facility and start the login again.</p>`);
  },
};

const provider = new Provider(conf.issuer, configuration);
provider.proxy = false;

// ---- the login page ----
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
function page(title, body) {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${esc(title)} - ${esc(conf.organisation)}</title>
<style>body{font-family:system-ui,sans-serif;background:#f3f5f8;margin:0}main{max-width:380px;margin:8vh auto;background:#fff;
padding:2em;border-radius:8px;box-shadow:0 2px 8px #0002}h1{font-size:1.3em}label{display:block;margin:.8em 0 .2em}
input{width:100%;padding:.5em;box-sizing:border-box}button{margin-top:1.2em;width:100%;padding:.6em;background:#2a5db0;color:#fff;
border:0;border-radius:4px;font-size:1em}.error{color:#b00020}.note{color:#555;font-size:.85em}</style></head>
<body><main><h1>${esc(title)}</h1>${body}</main></body></html>`;
}
function loginForm(uid, clientId, error = '', username = '') {
  return page(`${conf.organisation} login`, `<p>Sign in to continue to <b>${esc(clientId)}</b>.</p>
${error ? `<p class="error" id="login-error">${esc(error)}</p>` : ''}
<form method="post" action="/interaction/${esc(uid)}/login" autocomplete="off">
<label for="username">Username</label><input id="username" name="username" value="${esc(username)}" required autofocus>
<label for="password">Password</label><input id="password" name="password" type="password" required>
<button type="submit" id="login-submit">Sign in</button></form>
<p class="note">Development identity provider of aifacility. Not for production use.</p>`);
}
function readForm(req) {
  return new Promise((resolve, reject) => {
    let data = '';
    req.on('data', (c) => { data += c; if (data.length > 10000) reject(new Error('form too large')); });
    req.on('end', () => resolve(new URLSearchParams(data)));
    req.on('error', reject);
  });
}
function sameSecret(a, b) {
  const h = (s) => createHash('sha256').update(String(s)).digest();
  return timingSafeEqual(h(a), h(b));
}
async function grantAll(details) {
  // First-party client of the facility: consent is implied (as for a client an IAM admin marked trusted).
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: details.session.accountId, clientId: details.params.client_id });
  grant.addOIDCScope(details.params.scope);
  if (details.prompt.details.missingOIDCClaims) grant.addOIDCClaims(details.prompt.details.missingOIDCClaims);
  return grant.save();
}

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new Error('interaction mismatch');
  const html = (status, body) => { res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' }); res.end(body); };
  if (details.prompt.name === 'consent') {
    const grantId = await grantAll(details);
    return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }
  if (action !== 'login' || req.method !== 'POST') return html(200, loginForm(uid, details.params.client_id));
  const form = await readForm(req);
  const username = form.get('username') ?? '';
  const user = users.get(username);
  if (!user || !sameSecret(form.get('password') ?? '', user.password)) {
    return html(401, loginForm(uid, details.params.client_id, 'Unknown username or wrong password.', username));
  }
  return provider.interactionFinished(req, res, { login: { accountId: user.sub } }, { mergeWithLastSubmission: false });
}

const oidc = provider.callback();
const server = createServer(async (req, res) => {
  const m = req.url.match(/^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login))?\/?(?:\?.*)?$/);
  if (!m) return oidc(req, res);
  try {
    await interaction(req, res, m[1], m[2]);
  } catch (err) {
    // An expired or unknown interaction (e.g. a login page left open too long): say so instead of a stack trace.
    res.writeHead(400, { 'content-type': 'text/html; charset=utf-8' });
    res.end(page('Login expired', `<p class="error">This login attempt is no longer valid (${esc(err.name ?? 'error')}).</p>
      <p>Go back to the facility and start the login again.</p>`));
  }
});
server.listen(conf.port, conf.host, () => {
  process.stdout.write(`aifacility-oidc listening on ${conf.issuer}\n`);
});
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
