// The client against a real service: SESSIONS_URL (the suite starts one, tests/test_clients.py),
// SESSIONS_TARANTOOL_PID (its Tarantool, paused to make the service answer 503).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { test } from 'node:test';

import {
  ERROR_CODES,
  InvalidInputError,
  NotFoundError,
  RETRY,
  RETRY_SAFE,
  RETRY_SAFE_WITH,
  SessionsClient,
  UnavailableError,
  WebhookVerificationError,
  errorClass,
  verifyWebhook,
} from '../index.js';
import { createHmac, randomBytes } from 'node:crypto';

const URL_ = process.env.SESSIONS_URL;
const GATEWAY = process.env.SESSIONS_GATEWAY_URL;
const GATEWAY_ROOT = process.env.SESSIONS_GATEWAY_ROOT;
// What the gateway has been sent so far (tests/gateway.py).
const seen = async () => (await fetch(`${GATEWAY_ROOT}/seen`)).json();
const sessions = new SessionsClient(URL_, { timeoutMs: 5000 });
const document = JSON.parse(readFileSync(new URL('../../../openapi.json', import.meta.url)));
const source = readFileSync(new URL('../index.js', import.meta.url), 'utf8');
// Users of their own, so that a second run on the same service starts clean.
let nextUser = BigInt(Date.now()) * 1000n;
const aUser = () => (nextUser += 1n);

test('every method and error code of the API document is in the client', () => {
  for (const path of Object.keys(document.paths)) {
    assert.ok(source.includes(`'${path}'`), `no method for ${path}`);
  }
  const codes = document.components.schemas.Error.properties.code.enum;
  for (const code of codes) assert.ok(ERROR_CODES.includes(code), `no family for ${code}`);
});

test('index.d.ts declares every export of index.js', async () => {
  const declarations = readFileSync(new URL('../index.d.ts', import.meta.url), 'utf8');
  const declared = new Set([...declarations.matchAll(/^export (?:declare )?(?:class|function|const|interface|type) (\w+)/gm)].map((m) => m[1]));
  for (const name of Object.keys(await import('../index.js'))) assert.ok(declared.has(name), `${name} is not in index.d.ts`);
});

test('the families, retry rules and safe operations are the API document\'s', () => {
  const code = document.components.schemas.Error.properties.code;
  const families = { not_found: NotFoundError, invalid_input: InvalidInputError, unavailable: UnavailableError };
  for (const [name, family] of Object.entries(code['x-family'])) {
    assert.equal(errorClass(name), families[family], name);
    assert.equal(RETRY[name], code['x-retry'][name], name);
  }
  for (const [path, item] of Object.entries(document.paths)) {
    assert.equal(RETRY_SAFE[path], item.post['x-retry-safe'], path);
    assert.equal(RETRY_SAFE_WITH[path], item.post['x-retry-safe-with'], path);
  }
});

test('the event pager follows the feed, and a long poll outlasts the timeout', async () => {
  const client = new SessionsClient(URL_, { timeoutMs: 1000 });
  let start = 0;
  for (;;) {
    const page = await client.events(start, { limit: 1000 });
    if (page.events.length === 0) break;
    start = page.next;
  }
  const user = aUser();
  const made = await client.new(user, '192.0.2.31');
  await client.delete(made.token);
  const seen = [];
  for await (const event of client.followEvents(start, { wait: null, limit: 1 })) seen.push(event);
  const mine = seen.filter((event) => event.userId === user);
  assert.deepEqual(mine.map((event) => [event.kind, event.reason, event.ip]), [['opened', null, '192.0.2.31'], ['ended', 'del', '192.0.2.31']]);
  assert.equal(mine[0].session, mine[1].session);
  const last = seen.at(-1).seq;
  const poll = client.events(last, { wait: 3 });
  await new Promise((resolve) => setTimeout(resolve, 1500));
  await client.new(user, '192.0.2.32');
  const page = await poll;
  assert.deepEqual(page.events.map((event) => [event.kind, event.userId]), [['opened', user]]);
  assert.equal(page.next, page.events[0].seq);
  await assert.rejects(client.events(0, { wait: 31 }), (error) => error instanceof InvalidInputError && error.code === 'invalid_wait');
});

test('verifyWebhook checks the signature in constant time and the timestamp within its tolerance', () => {
  const key = randomBytes(32);
  const secret = `whsec_${key.toString('base64')}`;
  const body = JSON.stringify({ type: 'session.opened', timestamp: '2025-01-01T00:00:00Z', data: { seq: 1 } });
  const now = 1764112345;
  const sign = (id, stamp, text) => `v1,${createHmac('sha256', key).update(`${id}.${stamp}.${text}`).digest('base64')}`;
  const good = { 'webhook-id': 'msg_1', 'webhook-timestamp': String(now), 'webhook-signature': sign('msg_1', now, body) };
  assert.deepEqual(verifyWebhook(secret, good, body, { now }).data, { seq: 1 });
  const headers = new Headers({ ...good, 'webhook-signature': `v1,AAAA ${good['webhook-signature']}` });
  assert.equal(verifyWebhook(secret, headers, Buffer.from(body), { now }).type, 'session.opened');
  assert.ok(verifyWebhook(secret, good, body, { now: now + 300 }));
  assert.ok(verifyWebhook(secret, good, body, { now: now - 300 }));
  const refused = (error) => error instanceof WebhookVerificationError;
  const bad = [
    [good, `${body} `, now],
    [{ ...good, 'webhook-id': 'msg_2' }, body, now],
    [{ ...good, 'webhook-timestamp': String(now + 1) }, body, now],
    [{ ...good, 'webhook-signature': `v2,${good['webhook-signature'].slice(3)}` }, body, now],
    [good, body, now + 301],
    [good, body, now - 301],
    [{ 'webhook-timestamp': String(now), 'webhook-signature': good['webhook-signature'] }, body, now],
  ];
  for (const [sent, text, at] of bad) assert.throws(() => verifyWebhook(secret, sent, text, { now: at }), refused);
  assert.throws(() => verifyWebhook(`whsec_${randomBytes(32).toString('base64')}`, good, body, { now }), refused);
  assert.throws(() => verifyWebhook('not-a-secret', good, body, { now }), refused);
  assert.ok(source.includes('timingSafeEqual(value, expected)'));
});

test('a session round trip: new, get, rotate, delete', async () => {
  const user = aUser();
  const opened = await sessions.new(user, '192.0.2.1', { extra: { device: 'Nexus 5' }, ttl: 3600 });
  assert.equal(opened.userId, user);
  assert.deepEqual(opened.extra, { device: 'Nexus 5' });
  const got = await sessions.get(opened.token, { ip: '192.0.2.7', extra: { device: null, os: 'Android' } });
  assert.equal(got.ip, '192.0.2.7');
  assert.deepEqual(got.extra, { os: 'Android' }); // null removed the key
  const rotated = await sessions.rotate(opened.token);
  assert.notEqual(rotated.token, opened.token);
  await assert.rejects(sessions.get(opened.token), NotFoundError);
  assert.equal((await sessions.delete(rotated.token)).token, rotated.token);
  await assert.rejects(sessions.delete(rotated.token), (error) => error instanceof NotFoundError && error.code === 'token_not_found' && error.status === 404);
});

test('session ids: read, end and keep by id; asked for with withIds', async () => {
  const user = aUser();
  const withIds = new SessionsClient(URL_, { timeoutMs: 5000, withIds: true });
  const kept = await withIds.new(user, '192.0.2.1');
  assert.match(kept.id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.equal((await sessions.get(kept.token)).id, undefined); // not asked: the six fields
  const ended = await withIds.new(user, '192.0.2.1');
  assert.equal((await withIds.rotate(kept.token)).id, kept.id);
  const found = await withIds.byId(ended.id);
  assert.equal(found.id, ended.id);
  assert.equal(found.token, undefined);
  assert.equal((await withIds.deleteById(ended.id)).id, ended.id);
  await assert.rejects(withIds.byId(ended.id), NotFoundError);
  await assert.rejects(withIds.byId('not-an-id'), (error) => error instanceof InvalidInputError && error.code === 'bad_request');
  await assert.rejects(withIds.deleteUser(user, { keep: 'x', keepId: kept.id }), InvalidInputError);
  await withIds.new(user, '192.0.2.1');
  assert.equal(await withIds.deleteUser(user, { keepId: kept.id }), 1);
  const listed = [];
  for await (const session of withIds.byUser(user)) listed.push(session.id);
  assert.deepEqual(listed, [kept.id]);
});

test('a service that keeps only hashes of tokens: the same calls, listings of SessionByIds', async () => {
  const hashed = new SessionsClient(process.env.SESSIONS_HASHED_URL, { timeoutMs: 5000, withIds: true });
  const user = aUser();
  const opened = await hashed.new(user, '192.0.2.1');
  assert.equal((await hashed.get(opened.token)).token, opened.token);
  const rotated = await hashed.rotate(opened.token);
  assert.equal(rotated.id, opened.id);
  const listed = [];
  for await (const session of hashed.byUser(user)) listed.push(session);
  assert.deepEqual(listed.map((session) => [session.id, 'token' in session]), [[opened.id, false]]);
  assert.equal((await hashed.byId(opened.id)).activity, rotated.activity);
  assert.equal((await hashed.delete(rotated.token)).token, rotated.token);
});

test('a user id of 2^63-1 is read back exactly', async () => {
  const largest = 2n ** 63n - 1n;
  await sessions.deleteUser(largest);
  const opened = await sessions.new(largest, '192.0.2.2');
  assert.equal(opened.userId, 9223372036854775807n);
  assert.equal((await sessions.get(opened.token)).userId, largest);
  const listed = [];
  for await (const session of sessions.byUser(largest)) listed.push(session.userId);
  assert.deepEqual(listed, [largest]);
  assert.equal(await sessions.deleteUser('9223372036854775807'), 1);
});

test('paging walks every session of a user with more than a page', async () => {
  const user = aUser();
  const opened = [];
  for (let i = 0; i < 7; i += 1) opened.push((await sessions.new(user, '192.0.2.3')).token);
  const walked = [];
  for await (const session of sessions.byUser(user, { pageSize: 3 })) walked.push(session.token);
  assert.deepEqual(walked, opened.reverse()); // newest opened first, each once
  assert.equal(await sessions.countUser(user), 7);
  assert.equal(await sessions.count('user', user), 7);
  const kept = opened[0];
  assert.equal(await sessions.deleteUser(user, { keep: kept }), 6);
  const ip = `2001:db8::${(user % 65535n).toString(16)}`;
  await sessions.get(kept, { ip });
  const seen = [];
  for await (const session of sessions.byIp(ip, { pageSize: 1 })) seen.push(session.token);
  assert.deepEqual(seen, [kept]);
  assert.equal(await sessions.count('ip', ip), 1);
  assert.equal(await sessions.deleteIp(ip), 1);
});

test('paging behind a gateway that serves the service under a path prefix', async () => {
  const behind = new SessionsClient(process.env.SESSIONS_GATEWAY_URL, { timeoutMs: 5000, retries: 0 });
  const user = aUser();
  const opened = [];
  for (let i = 0; i < 5; i += 1) opened.push((await behind.new(user, '192.0.2.8')).token);
  const walked = [];
  for await (const session of behind.byUser(user, { pageSize: 2 })) walked.push(session.token);
  assert.deepEqual(walked, opened.reverse());
  assert.equal(await behind.deleteUser(user), 5);
});

test('every error family', async () => {
  await assert.rejects(sessions.get('61494096-9af7-49ba-9fb4-e89c0811e6d3'), NotFoundError);
  await assert.rejects(sessions.new(1, 'not an address'), (error) => error instanceof InvalidInputError && error.code === 'invalid_ip' && error.status === 400);
  await assert.rejects(sessions.new(0, '192.0.2.1'), (error) => error.code === 'invalid_user_id');
  await assert.rejects(sessions.new(2 ** 60, '192.0.2.1'), InvalidInputError); // not a safe integer
  const keyed = await sessions.new(aUser(), '192.0.2.4', { idempotencyKey: `k-${nextUser}` });
  const again = await sessions.new(keyed.userId, '192.0.2.4', { idempotencyKey: `k-${nextUser}` });
  assert.equal(again.token, keyed.token);
  await assert.rejects(sessions.new(keyed.userId, '192.0.2.5', { idempotencyKey: `k-${nextUser}` }), (error) => error.code === 'idempotency_conflict');
  const unreachable = new SessionsClient('http://127.0.0.1:9', { timeoutMs: 1000, retries: 0 });
  await assert.rejects(unreachable.get(keyed.token), (error) => error instanceof UnavailableError && error.code === 'service_unavailable');
  assert.equal(errorClass('overloaded'), UnavailableError);
  assert.equal(errorClass('payload_too_large'), InvalidInputError);
});

test('the token to keep travels in a header, never in the URL', async () => {
  const behind = new SessionsClient(GATEWAY, { timeoutMs: 5000 });
  const user = aUser();
  const kept = await behind.new(user, '192.0.2.9');
  await behind.new(user, '192.0.2.9');
  assert.equal(await behind.deleteUser(user, { keep: kept.token }), 1);
  await behind.get(kept.token);
  const requests = await seen();
  const sent = requests.filter((request) => request.target.startsWith('/sessions/user/del'));
  assert.equal(sent.at(-1).headers['X-Session-Token'], kept.token);
  assert.deepEqual(requests.filter((request) => request.target.includes(kept.token)), []);
});

test('a header value a header cannot hold is invalid input, and nothing is sent', async () => {
  const behind = new SessionsClient(GATEWAY, { timeoutMs: 5000 });
  const before = (await seen()).length;
  for (const bad of ['61494096-9af7-49ba-9fb4-e89c0811e6d3\r\nX-Evil: 1', 'a\nb', 'nul\u0000', 'é', '\u{1F600}']) {
    const refused = (error) => error instanceof InvalidInputError && error.code === 'bad_request' && error.status === null;
    await assert.rejects(behind.get(bad), refused);
    await assert.rejects(behind.delete(bad), refused);
    await assert.rejects(behind.rotate(bad), refused);
    await assert.rejects(behind.deleteUser(aUser(), { keep: bad }), refused);
    await assert.rejects(behind.new(aUser(), '192.0.2.1', { idempotencyKey: bad }), refused);
    await assert.rejects(behind.count(bad, aUser()), refused); // not a kind
    assert.throws(() => new SessionsClient(GATEWAY, { apiKey: bad }), refused);
  }
  assert.equal((await seen()).length, before);
});

test('extra data JSON cannot carry is invalid input, and nothing is sent', async () => {
  const behind = new SessionsClient(GATEWAY, { timeoutMs: 5000 });
  const before = (await seen()).length;
  const refused = (error) => error instanceof InvalidInputError && error.code === 'invalid_extra';
  await assert.rejects(behind.new(aUser(), '192.0.2.1', { extra: { id: 2n ** 63n } }), refused);
  const cycle = {};
  cycle.self = cycle;
  await assert.rejects(behind.new(aUser(), '192.0.2.1', { extra: cycle }), refused);
  assert.equal((await seen()).length, before);
});

test('internal_error and codes of a later release follow the documented rule, and are not retried', async () => {
  for (const [status, code, family] of [[500, 'internal_error', UnavailableError], [418, 'a_later_code', InvalidInputError], [503, 'a_later_code', UnavailableError]]) {
    const base = `${GATEWAY_ROOT}/canned/${status}/${code}/${aUser()}`;
    const retried = [];
    const canned = new SessionsClient(base, { onRetry: (event) => retried.push(event) });
    await assert.rejects(canned.get('61494096-9af7-49ba-9fb4-e89c0811e6d3'), (error) => error instanceof family && error.code === code && error.status === status);
    assert.deepEqual(retried, []);
    assert.equal((await seen()).filter((request) => request.target.startsWith(base.slice(GATEWAY_ROOT.length))).length, 1);
  }
});

test('a deadline bounds a whole call against a service that accepts and never answers', async () => {
  const hung = createServer(() => {}); // accepts, never answers
  await new Promise((resolve) => hung.listen(0, '127.0.0.1', resolve));
  try {
    const url = `http://127.0.0.1:${hung.address().port}`;
    const bounded = new SessionsClient(url, { timeoutMs: 400, retries: 2, deadlineMs: 700 });
    const started = performance.now();
    await assert.rejects(bounded.get('61494096-9af7-49ba-9fb4-e89c0811e6d3'), (error) => error instanceof UnavailableError && error.code === 'service_unavailable');
    // 400 ms, a wait of 100 ms, the 200 ms left; without the deadline: 3 attempts of 400 ms
    // and 100 + 200 ms of waits, 1500 ms.
    const took = performance.now() - started;
    assert.ok(took > 600 && took < 1100, `${took} ms`);
  } finally {
    hung.closeAllConnections?.();
    hung.close();
  }
});

test('API keys go as a bearer header', { skip: !process.env.SESSIONS_KEYED_URL }, async () => {
  const keyed = process.env.SESSIONS_KEYED_URL;
  const anonymous = new SessionsClient(keyed);
  await assert.rejects(anonymous.countUser(1), (error) => error instanceof InvalidInputError && error.code === 'unauthorized' && error.status === 401);
  const withKey = new SessionsClient(keyed, { apiKey: process.env.SESSIONS_KEY });
  assert.equal(await withKey.countUser(aUser()), 0);
});

test('a 503 is retried after Retry-After', { skip: !process.env.SESSIONS_TARANTOOL_PID }, async () => {
  const pid = Number(process.env.SESSIONS_TARANTOOL_PID);
  const opened = await sessions.new(aUser(), '192.0.2.6');
  const retries = [];
  const patient = new SessionsClient(URL_, {
    timeoutMs: 5000,
    onRetry: (event) => {
      retries.push(event);
      process.kill(pid, 'SIGCONT'); // Tarantool answers again before the retry
    },
  });
  process.kill(pid, 'SIGSTOP');
  try {
    const got = await patient.get(opened.token);
    assert.equal(got.token, opened.token);
  } finally {
    process.kill(pid, 'SIGCONT');
  }
  assert.equal(retries.length, 1);
  assert.equal(retries[0].error.code, 'storage_unavailable');
  assert.equal(retries[0].error.status, 503);
  assert.equal(retries[0].waitMs, 1000); // Retry-After: 1
});
