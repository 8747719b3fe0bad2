// A real OpenID Connect provider on loopback for the API's e2e login tests: panva's
// certified `oidc-provider` (pinned in package.json / package-lock.json), with its stock
// development interactions (a login form, then a consent form) driven over plain HTTP by the
// tests. Nothing here fakes the protocol: discovery, the authorization endpoint, PKCE, the token
// endpoint, client authentication and the signed ID tokens are the library's own.
//
//   node provider.mjs PORT CLIENTS_JSON_FILE
//
// Test-only choices, each for a reason:
// - a fresh RS256 signing key (random kid) at every start, so restarting the process on the same
//   port is a key rollover the API must follow through its JWKS cache;
// - PKCE (S256) required for every client, so the provider itself refuses a missing or wrong
//   code_verifier;
// - the account is the login name typed into the form: `alice@x` has the verified e-mail
//   alice@x; `unverified:alice@x` has alice@x unverified; `noemail:id` has no e-mail;
//   `groups=a,b:alice@x` is alice@x (verified) in groups a and b (the `groups` scope and claim);
// - the e-mail claims go into the ID token (conformIdTokenClaims: false), as Google's do;
// - every request is logged on stdout (method and path only), so a test can count JWKS fetches.
import crypto from 'node:crypto';
import fs from 'node:fs';

import Provider from 'oidc-provider';

const [port, clientsFile] = process.argv.slice(2);
if (!port || !clientsFile) {
  console.error('usage: node provider.mjs PORT CLIENTS_JSON_FILE');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;
const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const signing = {
  ...privateKey.export({ format: 'jwk' }), kid: crypto.randomUUID(), use: 'sig', alg: 'RS256',
};

function claimsOf(login) {
  const [kind, rest] = login.includes(':') ? login.split(/:(.*)/s, 2) : ['verified', login];
  if (kind === 'noemail') return { sub: login };
  if (kind.startsWith('groups=')) {
    return { sub: login, email: rest, email_verified: true, groups: kind.slice(7).split(',') };
  }
  return { sub: login, email: rest, email_verified: kind !== 'unverified' };
}

const provider = new Provider(issuer, {
  clients: JSON.parse(fs.readFileSync(clientsFile, 'utf8')),
  jwks: { keys: [signing] },
  pkce: { required: () => true },
  conformIdTokenClaims: false,
  claims: { openid: ['sub'], email: ['email', 'email_verified'], groups: ['groups'] },
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  features: { devInteractions: { enabled: true } },
  findAccount: async (_ctx, id) => ({ accountId: id, claims: async () => claimsOf(id) }),
});

provider.use(async (ctx, next) => {
  console.log(`${ctx.method} ${ctx.path}`);
  await next();
});

provider.listen(Number(port), '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${issuer} (signing kid ${signing.kid})`);
});
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));
