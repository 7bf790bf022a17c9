// A program that uses everything index.d.ts declares, as the README does, for `tsc` to check
// (tsconfig.json; tests/test_clients.py runs it): the declarations compile under --strict,
// and the lines marked @ts-expect-error are refused, as the client refuses them at run time.
import {
  ERROR_CODES,
  InvalidInputError,
  KINDS,
  NotFoundError,
  RETRY,
  RETRY_SAFE,
  RETRY_SAFE_WITH,
  SessionsClient,
  SessionsError,
  UnavailableError,
  WEBHOOK_TOLERANCE,
  WebhookVerificationError,
  errorClass,
  verifyWebhook,
} from './index.js';
import type {
  ClientOptions,
  EventsPage,
  Extra,
  Kind,
  RetryEvent,
  Session,
  SessionById,
  UserId,
  WebhookMessage,
} from './index.js';

const options: ClientOptions = {
  apiKey: null,
  timeoutMs: 2000,
  deadlineMs: 3000,
  retries: 2,
  onRetry: (event: RetryEvent) => {
    const waited: number = event.waitMs + event.attempt;
    const code: string = event.error.code;
    void [waited, code];
  },
};
const sessions = new SessionsClient('http://127.0.0.1:8080', options);

export async function uses(userId: UserId, extra: Extra): Promise<void> {
  const opened: Session = await sessions.new(userId, '192.0.2.1', { extra, ttl: 3600, idempotencyKey: 'k' });
  const id: bigint = opened.userId;
  const got = await sessions.get(opened.token, { ip: '192.0.2.2', extra: { device: null } });
  const since: number = got.create + got.activity;
  const rotated: Session = await sessions.rotate(got.token);
  const ended: number = await sessions.deleteUser(id, { keep: rotated.token });
  const counted: number = (await sessions.countUser(1n)) + (await sessions.deleteIp('192.0.2.1')) + ended + since;
  const kind: Kind = 'ip';
  const byKind: number = (await sessions.count('user', userId)) + (await sessions.count(kind, '192.0.2.1'));
  for await (const session of sessions.byUser('9223372036854775807', { pageSize: 10 })) void session.extra?.device;
  for await (const session of sessions.byIp('192.0.2.1')) void session.ip;
  const deleted: Session = await sessions.delete(rotated.token);
  void [counted, byKind, deleted, KINDS.user];
}

export async function byIds(userId: UserId): Promise<string> {
  const withIds = new SessionsClient('http://127.0.0.1:8080', { withIds: true });
  const opened: Session = await withIds.new(userId, '192.0.2.1');
  const sessionId: string | undefined = opened.id;
  const found: SessionById = await withIds.byId(sessionId ?? '');
  const ended: SessionById = await withIds.deleteById(found.id);
  const kept: number = await withIds.deleteUser(userId, { keepId: ended.id });
  return `${found.activity} ${kept}`;
}

export function errors(error: unknown): string {
  const families: (typeof SessionsError)[] = [errorClass('overloaded'), errorClass('a_later_code', 418)];
  if (error instanceof NotFoundError) return 'sign in';
  if (error instanceof InvalidInputError || error instanceof UnavailableError) {
    const retryAfter: number | null = error.retryAfter;
    const status: number | null = error.status;
    return `${error.code} ${status} ${retryAfter} ${families.length}`;
  }
  return '';
}

export const tables: [readonly string[], string, boolean, string | undefined] = [
  ERROR_CODES,
  RETRY.overloaded,
  RETRY_SAFE['/get'],
  RETRY_SAFE_WITH['/new'],
];

export async function feed(): Promise<string> {
  const page: EventsPage = await sessions.events(0, { limit: 10, wait: 5 });
  let last: number = page.next;
  const missed: boolean = page.missed;
  for await (const event of sessions.followEvents(last, { wait: null })) {
    const who: bigint = event.userId;
    const why: string | null = event.reason;
    const session: string = event.session;
    last = event.seq;
    void [who, why, session, missed];
  }
  try {
    const message: WebhookMessage = verifyWebhook('whsec_AAAA', new Headers(), '{}', { toleranceSeconds: 60 });
    return message.data.kind + String(WEBHOOK_TOLERANCE) + String(last);
  } catch (error) {
    if (error instanceof WebhookVerificationError) return error.message;
    throw error;
  }
}

export async function refused(): Promise<void> {
  // @ts-expect-error: an event's user id is a bigint
  const user: number = (await sessions.events()).events[0].userId;
  void user;
  // @ts-expect-error: a token is a string
  await sessions.get(1);
  // @ts-expect-error: sessions are counted by user or by address
  await sessions.count('device', 'x');
  // @ts-expect-error: keep is a token, in the options
  await sessions.deleteUser(1n, 'token');
  // @ts-expect-error: a session found by its id has no token
  void (await sessions.byId('i')).token;
  // @ts-expect-error: milliseconds are a number
  void new SessionsClient('http://127.0.0.1:8080', { deadlineMs: '3000' });
  // @ts-expect-error: ids are bigints: a number is not one
  const id: number = (await sessions.get('t')).userId;
  void id;
}
