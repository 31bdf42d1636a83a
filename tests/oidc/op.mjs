// panva's oidc-provider as the identity provider of portcullis' interop
// tests (tests/src/oidc.rs starts it):
//
//   node op.mjs <port> <api resource>
//
// Issuer http://127.0.0.1:<port>, its ES256 signing key generated at
// start, so every instance is an issuer with a key of its own. Clients:
//   app  client_credentials, client_secret_basic: gets the access tokens
//   rs   no grant: the resource server, for introspection
// Resources (RFC 8707 indicators): <api> gets RFC 9068 JWT access tokens
// (ES256, `aud` = <api>); <api>/opaque gets opaque ones (introspection).
// DPoP is on (a proof at the token endpoint binds the token: cnf.jkt);
// OP_DPOP_NONCE=1 makes the token endpoint demand DPoP nonces.
//
// Prints `ready <issuer>` once listening; exits when its stdin closes, so
// it never outlives the test process that started it.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import Provider from 'oidc-provider';

const port = Number(process.argv[2]);
const API = process.argv[3];
if (!Number.isInteger(port) || port <= 0 || !API) {
  console.error('usage: node op.mjs <port> <api resource>');
  process.exit(2);
}
const issuer = `http://127.0.0.1:${port}`;
const OPAQUE = `${API}/opaque`;

const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: 'app',
      client_secret: 'app-secret-app-secret-app-secret-00',
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_basic',
    },
    {
      client_id: 'rs',
      client_secret: 'rs-secret-rs-secret-rs-secret-000000',
      grant_types: [],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  ttl: { ClientCredentials: 300 },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    dPoP: {
      enabled: true,
      nonceSecret: randomBytes(32),
      requireNonce: () => process.env.OP_DPOP_NONCE === '1',
    },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => API,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource) => {
        if (resource === API) {
          return {
            scope: 'read write',
            accessTokenFormat: 'jwt',
            accessTokenTTL: 300,
            jwt: { sign: { alg: 'ES256' } },
          };
        }
        if (resource === OPAQUE) {
          return { scope: 'read', accessTokenFormat: 'opaque', accessTokenTTL: 300 };
        }
        throw new Provider.errors.InvalidTarget();
      },
    },
  },
  // ES256 only (an RSA key takes a third of a second to generate): ID
  // tokens, never issued here, would be ES256 too.
  clientDefaults: { id_token_signed_response_alg: 'ES256' },
  jwks: { keys: [{ ...ec, kid: 'es1', use: 'sig', alg: 'ES256' }] },
});

const server = provider.listen(port, '127.0.0.1', () => console.log(`ready ${issuer}`));
server.on('error', (e) => {
  console.error(`cannot listen on ${issuer}: ${e.message}`);
  process.exit(3);
});
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
process.stdin.resume();
