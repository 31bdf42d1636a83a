// A DPoP client made with panva's jose, an implementation independent of
// portcullis, for the interop tests (tests/src/oidc.rs):
//
//   node client.mjs <issuer> <resource> <alg> <htm> <htu>
//
// Makes a key pair for <alg> (ES256, or Ed25519 under its RFC 9864 name),
// gets a DPoP-bound client_credentials token for <resource> from <issuer>'s
// token endpoint as client `app` (answering a nonce demand), and prints one
// JSON line: the token, its type, the key's RFC 7638 thumbprint, and a
// proof for <htm> <htu> with `ath` of the token.
import { createHash, randomUUID } from 'node:crypto';
import * as jose from 'jose';

const [issuer, resource, alg, htm, htu] = process.argv.slice(2);
if (!issuer || !resource || !alg || !htm || !htu) {
  console.error('usage: node client.mjs <issuer> <resource> <alg> <htm> <htu>');
  process.exit(2);
}
const { privateKey, publicKey } = await jose.generateKeyPair(alg);
const jwk = await jose.exportJWK(publicKey);
const proof = (m, u, extra = {}) =>
  new jose.SignJWT({ htm: m, htu: u, jti: randomUUID(), ...extra })
    .setProtectedHeader({ typ: 'dpop+jwt', alg, jwk })
    .setIssuedAt()
    .sign(privateKey);
const tokenEndpoint = `${issuer}/token`;
const basic = `Basic ${Buffer.from('app:app-secret-app-secret-app-secret-00').toString('base64')}`;
const ask = async (nonce) =>
  fetch(tokenEndpoint, {
    method: 'POST',
    headers: {
      authorization: basic,
      'content-type': 'application/x-www-form-urlencoded',
      dpop: await proof('POST', tokenEndpoint, nonce ? { nonce } : {}),
    },
    body: new URLSearchParams({ grant_type: 'client_credentials', scope: 'read', resource }),
  });
let resp = await ask();
let body = await resp.json();
if (resp.status === 400 && body.error === 'use_dpop_nonce') {
  resp = await ask(resp.headers.get('dpop-nonce'));
  body = await resp.json();
}
if (resp.status !== 200) {
  console.error(`token endpoint: ${resp.status} ${JSON.stringify(body)}`);
  process.exit(1);
}
const ath = createHash('sha256').update(body.access_token).digest('base64url');
console.log(JSON.stringify({
  access_token: body.access_token,
  token_type: body.token_type,
  jkt: await jose.calculateJwkThumbprint(jwk, 'sha256'),
  alg,
  proof: await proof(htm, htu, { ath }),
}));
