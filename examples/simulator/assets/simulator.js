// The simulator page. Every action is a real HTTP request to the server;
// status, store operations, server time and what the server received come
// from the response (x-store-ops, x-store-ops-detail, x-server-time-us,
// x-received, x-auth-reason, x-auth-events). Nothing here builds HTML from strings: every
// node is created and filled with textContent.
'use strict';

const KINDS = ['session', 'jwt', 'jwt-revocation', 'hybrid'];
const NAMES = {
  session: 'Session',
  jwt: 'JWT',
  'jwt-revocation': 'JWT + pushed revocation',
  hybrid: 'Hybrid',
};
const SCALE = ['session-local', 'session-shared', 'jwt'];

let config = null;
let busy = false;
const panels = {};
for (const kind of KINDS) {
  panels[kind] = { token: null, loggedIn: false, last: null, step: 0 };
}

const $ = (id) => document.getElementById(id);

/** An element with attributes and children (strings become text nodes). */
function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k.startsWith('data-')) node.setAttribute(k, String(v));
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(typeof child === 'string' ? document.createTextNode(child) : child);
  }
  return node;
}

function user() {
  return $('username').value.trim() || 'alice';
}

function credentials() {
  return { username: user(), password: $('password').value };
}

/** A JWT's header and payload, decoded (anyone can: they are not encrypted). */
function decodeJwt(token) {
  const part = (s) => {
    const b64 = s.replace(/-/g, '+').replace(/_/g, '/');
    const bin = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
    const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  };
  try {
    const [header, payload] = token.split('.');
    return { header: part(header), payload: part(payload) };
  } catch (_) {
    return null;
  }
}

const STATUS_TEXT = {
  200: 'OK', 204: 'No Content', 400: 'Bad Request', 401: 'Unauthorized',
  403: 'Forbidden', 404: 'Not Found', 500: 'Internal Server Error', 503: 'Service Unavailable',
};

/** One real request; returns what the server reported about it. */
async function call(method, path, opts) {
  const o = opts || {};
  const headers = {};
  if (o.token) headers.Authorization = 'Bearer ' + o.token;
  if (o.csrf) headers[o.csrf.header] = o.csrf.token;
  if (o.body !== undefined) headers['Content-Type'] = 'application/json';
  const started = performance.now();
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers,
      body: o.body === undefined ? undefined : JSON.stringify(o.body),
      credentials: o.credentials || 'omit',
      cache: 'no-store',
    });
  } catch (e) {
    return { method, path, status: 0, error: String(e), ops: 0, detail: '', received: null, json: null };
  }
  let json = null;
  try {
    json = await resp.json();
  } catch (_) {
    json = null;
  }
  const get = (name) => resp.headers.get(name);
  let received = null;
  try {
    received = JSON.parse(get('x-received') || 'null');
  } catch (_) {
    received = null;
  }
  return {
    method,
    path,
    status: resp.status,
    ops: Number(get('x-store-ops') || 0),
    detail: get('x-store-ops-detail') || '',
    events: get('x-auth-events') || '',
    timeUs: get('x-server-time-us'),
    received,
    reason: get('x-auth-reason'),
    clock: get('x-clock-offset-s'),
    instance: get('x-instance'),
    roundTripMs: Math.round(performance.now() - started),
    json,
    sentToken: o.token || null,
  };
}

/** The authentication events the request's layers emitted, in order. */
function eventsText(r) {
  return r.events ? r.events.split(',').join(', ') : 'none';
}

function opsText(r) {
  const n = r.ops;
  const word = n === 1 ? 'store op' : 'store ops';
  if (!r.detail) return `${n} ${word}`;
  const each = r.detail.split(',').map((d) => {
    const [name, count] = d.split('=');
    return count === '1' ? name : `${name} ×${count}`;
  });
  return `${n} ${word} (${each.join(', ')})`;
}

/** Whether `name` is one of the cookies `kind` itself reads; the browser
 * also sends any other cookie whose path covers the URL (the Session
 * panel's cookie has Path=/, so it goes everywhere on this origin). */
function ownCookie(kind, name) {
  if (!config) return true;
  if (kind === 'session') return name === config.cookies.session;
  if (kind === 'hybrid') return name === config.cookies.refresh;
  return name.includes(`scale-${kind}`);
}

/** What the client sent, as the server received it (sizes, never values). */
function sentText(r, kind) {
  const rc = r.received;
  if (!rc) return 'unknown';
  const parts = [];
  if (rc.authorization_bytes) {
    parts.push(`Authorization: ${rc.authorization_scheme} <JWT>, ${rc.authorization_bytes} bytes`);
  }
  if (rc.cookie_bytes) {
    const own = rc.cookies.filter((c) => ownCookie(kind, c));
    const other = rc.cookies.filter((c) => !ownCookie(kind, c));
    let text = `Cookie: ${own.join(', ') || '(none of its own)'}`;
    if (other.length) text += ` + ${other.join(', ')} (another panel's; its path covers this URL)`;
    parts.push(`${text}, ${rc.cookie_bytes} bytes (HttpOnly: the size is the server's count)`);
  }
  if (rc.csrf_token_bytes) parts.push(`x-csrf-token, ${rc.csrf_token_bytes} bytes`);
  return parts.length ? parts.join(' + ') : 'no credential';
}

function minutes(secs) {
  const m = Math.round(Number(secs || 0) / 60);
  return `+${m} min`;
}

/** Plain-language meaning of a result. */
function explain(kind, action, r) {
  const p = panels[kind] || {};
  const s = r.status;
  const u = user();
  if (s === 0) return `The request did not reach the server: ${r.error}.`;
  if (s === 503) return 'The store is unavailable: the layer fails closed (503), it does not log anyone out.';
  if (action === 'csrf') {
    return 'CSRF token fetched. The browser attaches the cookie to every request by itself, so each POST must also carry this token, which another site cannot read. (An anonymous session holds its secret.)';
  }
  if (action === 'login') {
    if (s === 401) return 'Refused: wrong user name or password.';
    if (s === 403) return 'Refused by the CSRF check: the token was missing or did not match.';
    if (s !== 200) return `Unexpected answer ${s}.`;
    if (kind === 'session') return 'Logged in: the store holds a new session, and the browser keeps its id in an HttpOnly cookie. The id changed at login (no session fixation).';
    if (kind === 'hybrid') return 'Logged in: a 15-minute access token for the page\'s memory, and a refresh token in an HttpOnly, SameSite=Strict, host-only cookie. The store keeps the refresh family.';
    return 'Logged in: the server signed a token and forgot it. The page keeps it in memory and sends it in the Authorization header.';
  }
  if (action === 'profile') {
    if (s === 200) {
      if (kind === 'session') return 'Allowed: the server looked the session id up in the store.';
      if (kind === 'jwt' && p.last === 'revoked') {
        return `Still allowed! The admin revoked ${u}, but nothing on the server knew this token, so nothing could be deleted. It stays valid until its exp.`;
      }
      if (kind === 'jwt') return 'Allowed: signature and exp checked with the key; no store lookup.';
      return 'Allowed: signature and exp checked, and the in-process revocation view has nothing against it; no store call.';
    }
    if (s === 401) {
      if (kind === 'session') {
        if (p.last === 'revoked') return 'Revoked: the store no longer has this session, so the cookie proves nothing.';
        if (p.last === 'expired') return 'Expired: the session passed its 30-minute idle timeout, and the store treats it as gone.';
        if (r.received && r.received.cookie_bytes === 0) return 'No session cookie: log in first.';
        return 'The store has no live session for this cookie.';
      }
      if (r.reason === 'expired') {
        const hint = kind === 'hybrid' ? ' The refresh cookie can get a new one: press Refresh.' : ' Log in again.';
        return `Expired: the token's exp claim is in the past (the server clock moved ${minutes(r.clock)}).${hint}`;
      }
      if (r.reason === 'revoked') {
        return `Revoked: ${u}'s token version in the in-process view is newer than the token's ver claim. Decided in memory, with no store call.`;
      }
      if (!r.sentToken) return 'No token: log in first.';
      return 'Refused: the token is not valid here.';
    }
  }
  if (action === 'refresh') {
    if (s === 200) return 'Rotated: the store swapped the refresh token for a new one (the old one is now a reuse tripwire) and a fresh access token came back.';
    if (p.last === 'revoked') return `Refused: the admin deleted ${u}'s refresh family; the only way back is to log in again.`;
    return 'Refused: no valid refresh token (log in first).';
  }
  if (action === 'revoke') {
    const j = r.json || {};
    if (s !== 200) return `The admin's request failed (${s}).`;
    if (kind === 'session') return `The admin deleted ${j.sessions_deleted} session(s) of ${j.user} from the store.`;
    if (kind === 'jwt') return 'Nothing to delete: the server never stored the token. The admin can only wait for it to expire (or rotate the signing key and log everyone out).';
    if (kind === 'jwt-revocation') return `Pushed: ${j.user}'s token version is now ${j.token_version}, in the revocation store and at once in every instance's in-memory view.`;
    return `The admin deleted ${j.families_deleted} refresh family(ies) of ${j.user} and bumped the token version in the view: the access token dies now, and no refresh can mint another.`;
  }
  if (action === 'expire') {
    const j = r.json || {};
    const what = kind === 'session' ? 'the session\'s 30-minute idle timeout' : 'the access token\'s 15-minute lifetime';
    return `This strategy's server clock jumped ${minutes(j.advanced_secs)} (now ${minutes(j.clock_offset_secs)}), past ${what}. No request was made with the credential.`;
  }
  return '';
}

const LABELS = {
  csrf: 'CSRF token', login: 'Log in', profile: 'Request profile', refresh: 'Refresh',
  revoke: 'Admin revokes', expire: 'Expire (clock jump)',
};

/** Appends a result to a timeline. */
function record(listId, kind, action, r, extra) {
  const list = $(listId);
  const n = list.children.length + 1;
  const statusClass = r.status >= 200 && r.status < 300 ? 'ok' : r.status === 0 ? 'err' : 'bad';
  const admin = action === 'revoke' || action === 'expire';
  const facts = h('dl', { class: 'facts' },
    h('dt', {}, 'Sent'), h('dd', { class: 'sent' }, admin ? `the admin's request: ${sentText(r, kind)}` : sentText(r, kind)),
    h('dt', {}, 'Store'), h('dd', { class: 'ops', 'data-ops': r.ops }, opsText(r)),
    h('dt', {}, 'Events'), h('dd', { class: 'events' }, eventsText(r)),
    h('dt', {}, 'Server'), h('dd', { class: 'time' }, r.timeUs ? `${r.timeUs} µs` : '—'),
  );
  const token = action === 'login' || action === 'refresh' ? (r.json && r.json.access_token) : r.sentToken;
  let jwt = null;
  if (token) {
    const d = decodeJwt(token);
    if (d) {
      const label = action === 'login' || action === 'refresh'
        ? `Received JWT (${token.length} bytes), decoded`
        : `Sent JWT (${token.length} bytes), decoded`;
      jwt = h('details', { class: 'jwt' },
        h('summary', {}, label),
        h('p', { class: 'jwt-part' }, 'Header'),
        h('pre', { class: 'jwt-header' }, JSON.stringify(d.header, null, 1)),
        h('p', { class: 'jwt-part' }, 'Payload (signed, not encrypted: anyone can read it)'),
        h('pre', { class: 'jwt-payload' }, JSON.stringify(d.payload, null, 1)),
      );
    }
  }
  const instance = r.instance ? h('span', { class: 'instance' }, `instance ${r.instance}`) : null;
  const item = h('li', {
    class: `entry ${statusClass}${admin ? ' admin' : ''}`,
    'data-kind': kind,
    'data-action': action,
    'data-status': r.status,
    'data-ops': r.ops,
  },
  h('p', { class: 'line' },
    h('span', { class: 'n' }, `${n}.`), ' ',
    h('span', { class: 'label' }, LABELS[action] || action), ' ',
    instance, instance ? ' ' : null,
    h('span', { class: 'status' }, `${r.status} ${STATUS_TEXT[r.status] || ''}`.trim()),
  ),
  h('p', { class: 'req' }, `${r.method} ${r.path}`),
  h('p', { class: 'explain' }, extra || explain(kind, action, r)),
  facts,
  jwt,
  );
  list.append(item);
  return item;
}

function setState(kind) {
  const p = panels[kind];
  let text;
  if (!p.loggedIn) text = 'Logged out';
  else if (kind === 'session') text = `Logged in as ${p.user} (cookie)`;
  else text = `Logged in as ${p.user} (token in page memory)`;
  $(`${kind}-state`).textContent = text;
}

function setClock(kind, r) {
  if (r.clock !== null && r.clock !== undefined) $(`${kind}-clock`).textContent = minutes(r.clock);
}

// ---- actions, one per button; each returns the results it recorded ----

async function login(kind) {
  const p = panels[kind];
  const results = [];
  if (kind === 'session') {
    const t = await call('GET', '/session/csrf', { credentials: 'same-origin' });
    record('session-timeline', kind, 'csrf', t);
    results.push(t);
    if (t.status !== 200) return results;
    const r = await call('POST', '/session/login', {
      credentials: 'same-origin',
      csrf: { header: t.json.header, token: t.json.csrf_token },
      body: credentials(),
    });
    results.push(r);
    p.loggedIn = r.status === 200;
  } else {
    const path = kind === 'hybrid' ? '/hybrid/auth/login' : `/${kind}/login`;
    const r = await call('POST', path, {
      credentials: kind === 'hybrid' ? 'same-origin' : 'omit',
      body: credentials(),
    });
    results.push(r);
    p.loggedIn = r.status === 200;
    p.token = p.loggedIn ? r.json.access_token : null;
  }
  const last = results[results.length - 1];
  p.user = user();
  if (p.loggedIn) p.last = null;
  record(`${kind}-timeline`, kind, 'login', last);
  setClock(kind, last);
  setState(kind);
  return results;
}

async function profile(kind) {
  const p = panels[kind];
  const r = kind === 'session'
    ? await call('GET', '/session/api/profile', { credentials: 'same-origin' })
    : await call('GET', `/${kind}/api/profile`, { token: p.token });
  record(`${kind}-timeline`, kind, 'profile', r);
  setClock(kind, r);
  return [r];
}

async function refresh(kind) {
  const p = panels[kind];
  const r = await call('POST', '/hybrid/auth/refresh', { credentials: 'same-origin' });
  if (r.status === 200) {
    p.token = r.json.access_token;
    p.loggedIn = true;
  } else {
    p.token = null;
    p.loggedIn = false;
  }
  record(`${kind}-timeline`, kind, 'refresh', r);
  setClock(kind, r);
  setState(kind);
  return [r];
}

async function revoke(kind) {
  const p = panels[kind];
  const r = await call('POST', `/${kind}/admin/revoke`, { body: { user: user() } });
  if (r.status === 200) p.last = 'revoked';
  record(`${kind}-timeline`, kind, 'revoke', r);
  setClock(kind, r);
  return [r];
}

async function expire(kind) {
  const p = panels[kind];
  const r = await call('POST', `/${kind}/admin/expire`);
  if (r.status === 200) p.last = 'expired';
  record(`${kind}-timeline`, kind, 'expire', r);
  setClock(kind, r);
  return [r];
}

async function reset(kind) {
  // Same-origin so that the answer's cookie removals apply.
  const r = await call('POST', `/${kind}/admin/reset`, { credentials: 'same-origin' });
  panels[kind] = { token: null, loggedIn: false, last: null, step: 0 };
  $(`${kind}-timeline`).replaceChildren();
  setClock(kind, r);
  setState(kind);
  return [r];
}

const ACTIONS = { login, profile, refresh, revoke, expire, reset };

// ---- scenarios ----

function cell(results) {
  if (!results || !results.length) return { text: '—', status: '', ops: '' };
  const last = results[results.length - 1];
  const ops = results.reduce((a, r) => a + r.ops, 0);
  return { text: String(last.status), status: last.status, ops };
}

const SCENARIOS = {
  basic: {
    title: 'Basic flow',
    steps: [
      ['log in', 'login'], ['request 1', 'profile'], ['request 2', 'profile'], ['request 3', 'profile'],
    ],
    verdict(rows) {
      const perRequest = KINDS.map((k) => `${NAMES[k]} ${rows[k][1].ops}`).join(', ');
      return `Store operations per profile request: ${perRequest}. The session pays a store lookup on every request; the JWTs pay none.`;
    },
  },
  revocation: {
    title: 'Revocation test',
    steps: [
      ['log in', 'login'], ['before revoke', 'profile'], ['admin revokes', 'revoke'], ['after revoke', 'profile'],
    ],
    verdict(rows) {
      const after = KINDS.map((k) => `${NAMES[k]} ${rows[k][3].status}`).join(', ');
      return `After revocation: ${after}. Only the plain JWT still works: nothing on the server knew about it. The session is gone from the store; the pushed revocation reached the in-process view at once.`;
    },
  },
  expiration: {
    title: 'Expiration',
    steps: [
      ['log in', 'login'], ['before expiry', 'profile'], ['expire', 'expire'], ['after expiry', 'profile'],
      ['refresh', 'refresh', ['hybrid']], ['after refresh', 'profile', ['hybrid']],
    ],
    verdict(rows) {
      const after = KINDS.map((k) => `${NAMES[k]} ${rows[k][3].status}`).join(', ');
      return `After the clock jump: ${after}. The session is gone from the store; the JWTs' exp claims are in the past. The hybrid's refresh token outlives its access token: refresh answered ${rows.hybrid[4].status}, and the next request ${rows.hybrid[5].status}.`;
    },
  },
};

function buildSummary(scenario) {
  $('summary').hidden = false;
  $('summary-title').textContent = `Summary: ${scenario.title}`;
  const head = $('summary-head');
  head.replaceChildren(h('th', { scope: 'col' }, 'Strategy'),
    ...scenario.steps.map(([label]) => h('th', { scope: 'col' }, label)));
  const body = $('summary-body');
  body.replaceChildren(...KINDS.map((kind) => h('tr', { id: `summary-${kind}` },
    h('th', { scope: 'row' }, NAMES[kind]),
    ...scenario.steps.map((_, i) => h('td', { id: `sum-${kind}-${i}`, class: 'pending' }, '…')))));
  $('summary-verdict').textContent = '';
}

function fillCell(kind, i, c) {
  const td = $(`sum-${kind}-${i}`);
  td.replaceChildren();
  td.className = c.status === '' ? 'skip' : c.status >= 200 && c.status < 300 ? 'ok' : 'bad';
  td.setAttribute('data-status', c.status);
  td.setAttribute('data-ops', c.ops);
  td.append(h('span', { class: 'cell-status' }, c.text));
  if (c.status !== '') {
    td.append(h('span', { class: 'cell-ops' }, `${c.ops} ${c.ops === 1 ? 'op' : 'ops'}`));
  }
}

function setBusy(on) {
  busy = on;
  for (const b of document.querySelectorAll('button')) b.disabled = on;
}

function status(text, state) {
  const s = $('run-status');
  s.textContent = text;
  s.setAttribute('data-state', state || '');
}

async function runScenario(name) {
  if (busy) return;
  const scenario = SCENARIOS[name];
  setBusy(true);
  status(`Running: ${scenario.title}…`, 'running');
  try {
    for (const kind of KINDS) await reset(kind);
    buildSummary(scenario);
    const rows = {};
    for (const kind of KINDS) rows[kind] = [];
    for (const [i, [, action, only]] of scenario.steps.entries()) {
      for (const kind of KINDS) {
        let results = [];
        if (!only || only.includes(kind)) results = await ACTIONS[action](kind);
        const c = cell(results);
        rows[kind][i] = c;
        fillCell(kind, i, c);
      }
    }
    $('summary-verdict').textContent = scenario.verdict(rows);
    status(`Done: ${scenario.title}`, 'done');
  } catch (e) {
    status(`Failed: ${scenario.title}: ${e}`, 'failed');
  } finally {
    setBusy(false);
  }
}

async function single(kind, action) {
  if (busy) return;
  setBusy(true);
  try {
    await ACTIONS[action](kind);
  } catch (e) {
    status(`Failed: ${NAMES[kind]} ${action}: ${e}`, 'failed');
  } finally {
    setBusy(false);
  }
}

// ---- lesson: where the token lives ----

/** tone: 'danger' (the attacker got something), 'safe' or 'info'. */
function lessonLine(id, title, text, tone) {
  $('storage-output').append(h('li', { id, class: tone },
    h('strong', {}, title), ' ', h('span', { class: 'lesson-text' }, text)));
}

async function storageLesson() {
  if (busy) return;
  setBusy(true);
  status('Running: where the client keeps the token…', 'running');
  $('storage-output').replaceChildren();
  try {
    await reset('session');
    await reset('jwt');
    await login('session');
    await login('jwt');
    const sessionName = config ? config.cookies.session : 'session';
    // The app keeps its JWT in localStorage, as many SPAs do.
    localStorage.setItem('access_token', panels.jwt.token || '');

    // --- what an injected script would run ---
    const stolen = localStorage.getItem('access_token') || '';
    const visibleCookies = document.cookie;
    // --- end of the injected script ---

    lessonLine('storage-localstorage', 'localStorage.getItem("access_token") →',
      stolen
        ? `"${stolen.slice(0, 24)}…" (${stolen.length} characters): the whole JWT. The script can send it anywhere.`
        : 'nothing (the JWT login failed)', stolen ? 'danger' : 'info');
    const hasSession = visibleCookies.split(';').some((c) => c.trim().startsWith(sessionName + '='));
    lessonLine('storage-document-cookie', 'document.cookie →',
      `${JSON.stringify(visibleCookies)}: ${hasSession ? `${sessionName} is readable!` : `no ${sessionName}; it is HttpOnly, out of every script's reach.`}`,
      hasSession ? 'danger' : 'safe');

    // Proof that the browser does hold the session cookie: the server saw it.
    const proof = await profile('session');
    const seen = proof[0].received ? proof[0].received.cookies : [];
    lessonLine('storage-proof', 'Yet the browser holds it:',
      `the server received the cookie(s) ${seen.join(', ') || 'none'} with the next session request (${proof[0].status}).`,
      'info');

    // The attacker replays the stolen token from elsewhere: no cookies at all.
    const replay = await call('GET', '/jwt/api/profile', { token: stolen, credentials: 'omit' });
    lessonLine('storage-replay', 'The attacker replays the stolen JWT in a request without any cookie, as from their own machine →',
      `${replay.status} ${STATUS_TEXT[replay.status] || ''}: a bearer token works for whoever holds it, until it expires.`,
      replay.status === 200 ? 'danger' : 'safe');
    lessonLine('storage-note', 'What HttpOnly does and does not do:',
      'an injected script can still make requests while the page is open (the browser attaches the cookie), but it cannot carry the session id away. Keep tokens out of localStorage; prefer HttpOnly, SameSite cookies with CSRF tokens, or the hybrid pattern (access token in memory only).',
      'info');
    localStorage.removeItem('access_token');
    status('Done: where the client keeps the token', 'done');
  } catch (e) {
    status(`Failed: token storage lesson: ${e}`, 'failed');
  } finally {
    setBusy(false);
  }
}

// ---- lesson: scale-out ----

function scaleExplain(variant, action, r) {
  const at = r.instance ? `Instance ${r.instance}` : 'The instance';
  if (action === 'csrf') return `${at} rendered a CSRF token signed with the key both instances share.`;
  if (action === 'login') {
    if (r.status !== 200) return `${at} refused the login (${r.status}).`;
    return variant === 'jwt'
      ? `${at} signed a token with the shared key and stored nothing.`
      : `${at} verified the CSRF token (signed, so any instance can) and created the session in ${variant === 'session-local' ? 'its own memory store' : 'the shared store'}.`;
  }
  if (r.status === 200) {
    return variant === 'jwt'
      ? `${at} verified the signature with the same key: no store needed.`
      : `${at} found the session in the shared store.`;
  }
  if (variant === 'session-local') {
    const sent = r.received && r.received.cookies.some((c) => ownCookie(variant, c) && !c.endsWith('-csrf'));
    return sent
      ? `${at}'s own store has never seen this session (it lives on the other instance): 401, and instance ${r.instance} told the browser to drop the cookie. The user is logged out.`
      : `${at} got no session cookie (the other instance had it deleted): the session is lost, although the instance that created it still holds it.`;
  }
  return `${at} refused (${r.status}).`;
}

async function scaleLesson() {
  if (busy) return;
  setBusy(true);
  status('Running: scale-out…', 'running');
  $('scale-verdict').textContent = '';
  const outcome = {};
  try {
    for (const v of SCALE) {
      await call('POST', `/scale/${v}/admin/reset`, { credentials: 'same-origin' });
      $(`scale-${v}-timeline`).replaceChildren();
    }
    for (const v of SCALE) {
      const list = `scale-${v}-timeline`;
      const base = `/scale/${v}`;
      let token = null;
      if (v === 'jwt') {
        const r = await call('POST', `${base}/login`, { body: credentials() });
        token = r.status === 200 ? r.json.access_token : null;
        record(list, v, 'login', r, scaleExplain(v, 'login', r));
      } else {
        const t = await call('GET', `${base}/csrf`, { credentials: 'same-origin' });
        record(list, v, 'csrf', t, scaleExplain(v, 'csrf', t));
        const r = await call('POST', `${base}/login`, {
          credentials: 'same-origin',
          csrf: t.json ? { header: t.json.header, token: t.json.csrf_token } : null,
          body: credentials(),
        });
        record(list, v, 'login', r, scaleExplain(v, 'login', r));
      }
      outcome[v] = [];
      for (let i = 0; i < 2; i += 1) {
        const r = v === 'jwt'
          ? await call('GET', `${base}/api/profile`, { token })
          : await call('GET', `${base}/api/profile`, { credentials: 'same-origin' });
        record(list, v, 'profile', r, scaleExplain(v, 'profile', r));
        outcome[v].push(`${r.status} on ${r.instance}`);
      }
    }
    $('scale-verdict').textContent =
      `Per-instance memory store: ${outcome['session-local'].join(', ')}: the session is lost. ` +
      `Shared store: ${outcome['session-shared'].join(', ')}: kept. ` +
      `JWT: ${outcome.jwt.join(', ')}: kept, with no store at all.`;
    status('Done: scale-out', 'done');
  } catch (e) {
    status(`Failed: scale-out lesson: ${e}`, 'failed');
  } finally {
    setBusy(false);
  }
}

// ---- settings, cookie check, wiring ----

async function loadConfig() {
  try {
    const r = await fetch('/sim/config', { cache: 'no-store' });
    config = await r.json();
  } catch (_) {
    $('mode-note').textContent = 'Could not load the server settings.';
    return;
  }
  const secure = config.cookie_mode === 'secure';
  $('mode-note').textContent = secure
    ? `Cookies: the library's secure defaults (${config.cookies.session}, ${config.cookies.refresh}: Secure, HttpOnly, SameSite), kept over plain http because browsers such as Chromium treat 127.0.0.1 and localhost as secure contexts (a warning appears here if yours does not). Sessions: ${config.session_store === 'redis' ? 'in Redis' : 'in memory'}; refresh families and revocations: in memory.`
    : `Cookies: INSECURE development mode (started with PORTCULLIS_INSECURE_DEV_COOKIES): no Secure flag and no __Host-/__Secure- prefix, because this page is served over plain http. Never in production. Sessions: ${config.session_store === 'redis' ? 'in Redis' : 'in memory'}.`;
  $('cookie-footer').textContent = secure
    ? 'This demo serves plain http on your own machine. A real deployment serves https; the cookie settings above are the ones it would send.'
    : 'Insecure development cookies are on: they travel without the Secure flag. A real deployment serves https and keeps the library\'s defaults.';
  $('scale-shared-note').textContent = config.session_store === 'redis'
    ? 'Shared store: Redis (REDIS_URL).'
    : 'Shared store: one in-process memory store standing in for Redis (set REDIS_URL to use Redis).';
  if (secure) {
    // Does this browser keep Secure cookies over http? Safari does not.
    try {
      await fetch('/sim/cookie-probe', { method: 'POST', credentials: 'same-origin', cache: 'no-store' });
      const r = await fetch('/sim/cookie-probe', { credentials: 'same-origin', cache: 'no-store' });
      const probe = await r.json();
      if (!probe.kept) {
        const w = $('cookie-warning');
        w.textContent = 'This browser refused a Secure cookie over plain http, so the Session and Hybrid panels cannot keep their cookies. Restart the simulator with PORTCULLIS_INSECURE_DEV_COOKIES=1 (cookies without Secure, for this local demo only), or use a Chromium-based browser.';
        w.hidden = false;
      }
    } catch (_) {
      // The panels will show what fails.
    }
  }
}

function wire() {
  for (const kind of KINDS) {
    for (const action of ['login', 'profile', 'refresh', 'revoke', 'expire', 'reset']) {
      const b = $(`${kind}-${action}`);
      if (b) b.addEventListener('click', () => single(kind, action));
    }
    setState(kind);
  }
  $('scenario-basic').addEventListener('click', () => runScenario('basic'));
  $('scenario-revocation').addEventListener('click', () => runScenario('revocation'));
  $('scenario-expiration').addEventListener('click', () => runScenario('expiration'));
  $('lesson-storage').addEventListener('click', storageLesson);
  $('lesson-scale').addEventListener('click', scaleLesson);
}

document.addEventListener('DOMContentLoaded', () => {
  wire();
  setBusy(true);
  loadConfig().finally(() => {
    setBusy(false);
    document.body.setAttribute('data-ready', 'true');
  });
});
