// The client against a real service: SESSIONS_URL (the suite starts one, tests/test_clients.py),
// SESSIONS_TARANTOOL_PID (its Tarantool, paused to make the service answer 503).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import {
  ERROR_CODES,
  InvalidInputError,
  NotFoundError,
  SessionsClient,
  UnavailableError,
  errorClass,
} from '../index.js';

const URL_ = process.env.SESSIONS_URL;
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
  const kept = opened[0];
  assert.equal(await sessions.deleteUser(user, { keep: kept }), 6);
  const ip = `2001:db8::${(user % 65535n).toString(16)}`;
  await sessions.get(kept, { ip });
  const seen = [];
  for await (const session of sessions.byIp(ip, { pageSize: 1 })) seen.push(session.token);
  assert.deepEqual(seen, [kept]);
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
