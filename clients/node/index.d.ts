/** A session as the service keeps it; `userId` is a bigint (ids go up to 2^63-1). */
export interface Session {
  readonly ip: string;
  readonly extra: Record<string, unknown> | null;
  readonly userId: bigint;
  /** Unix seconds. */
  readonly create: number;
  /** Unix seconds of the last use. */
  readonly activity: number;
  readonly token: string;
  /** The session's id (not secret, kept for its life): with the client's `withIds`. */
  readonly id?: string;
}

/** A session found by its id (`byId`, `deleteById`): its id, never its token. */
export interface SessionById extends Omit<Session, 'token' | 'id'> {
  readonly id: string;
}

/** A user id: a bigint, a safe integer number, or a string of decimal digits. */
export type UserId = bigint | number | string;

/** Extra data merged into a session's `extra`; `null` removes a key. */
export type Extra = Record<string, unknown>;

export interface RetryEvent {
  /** 1 for the first retry. */
  attempt: number;
  error: UnavailableError;
  /** How long the client waits before it (the service's Retry-After, when it sent one). */
  waitMs: number;
}

export interface ClientOptions {
  /** One of the service's SESSIONS_API_KEYS, sent as `Authorization: Bearer`. */
  apiKey?: string | null;
  /** Per attempt; default 2000. A call safe to repeat may take `retries + 1` attempts. */
  timeoutMs?: number;
  /** The most a call takes as a whole, retries and their waits included; default none. */
  deadlineMs?: number | null;
  /** Retries after an unavailable answer (see the README for which calls); default 2. */
  retries?: number;
  /** Called before each retry, after the wait is chosen. */
  onRetry?: ((event: RetryEvent) => void | Promise<void>) | null;
  /** Ask for each session's `id` (`with=id`) on every call that answers sessions; default false. */
  withIds?: boolean;
  fetch?: typeof globalThis.fetch;
}

export class SessionsError extends Error {
  /** The API's error code, or `service_unavailable` when there was no answer. */
  readonly code: string;
  readonly status: number | null;
  /** Seconds the service asked to wait (Retry-After), if it did. */
  readonly retryAfter: number | null;
}
export class NotFoundError extends SessionsError {}
export class InvalidInputError extends SessionsError {}
export class UnavailableError extends SessionsError {}

/** The class of an error code; for a code this client does not know, by the HTTP status. */
export function errorClass(code: string, status?: number | null): typeof NotFoundError | typeof InvalidInputError | typeof UnavailableError;
export const ERROR_CODES: readonly string[];

/** When a call is repeated after an error: the API document's `x-retry` of each code. */
export type Retry = 'always' | 'if_safe' | 'never';
export const RETRY: Readonly<Record<string, Retry>>;
/** Whether each method (by its path) may be repeated: the API document's `x-retry-safe`. */
export const RETRY_SAFE: Readonly<Record<string, boolean>>;
/** The header that makes a method safe to repeat: `x-retry-safe-with`. */
export const RETRY_SAFE_WITH: Readonly<Record<string, string>>;
/** The kinds of key sessions are listed, counted and ended by: a user (by id) or an address. */
export type Kind = 'user' | 'ip';
/** Each kind's query parameter. */
export const KINDS: Readonly<Record<Kind, string>>;

/** A change to a session (the event feed): never a token. */
export interface SessionEvent {
  /** Its place in the feed: only ever grows; exact as a number up to 2^53. */
  readonly seq: number;
  /** Unix seconds of the change. */
  readonly time: number;
  readonly kind: 'opened' | 'rotated' | 'moved' | 'ended';
  /** Why it ended (kind 'ended'): del, session/del, user/del, ip/del, cap, lifetime, idle. */
  readonly reason: string | null;
  /** The session's id. */
  readonly session: string;
  readonly userId: bigint;
  /** The session's address after the change. */
  readonly ip: string;
}

/** A page of the feed: `next` is the `after` of the next call; `missed`: the retention removed events after the `after` asked. */
export interface EventsPage {
  readonly events: readonly SessionEvent[];
  readonly next: number;
  readonly missed: boolean;
}

/** A Standard Webhooks message the service sent: `data` is the event, with `user_id` as sent. */
export interface WebhookMessage {
  type: string;
  timestamp: string;
  data: { seq: number; time: number; kind: string; reason: string | null; session: string; user_id: number | string; ip: string };
}

export class WebhookVerificationError extends Error {}
export const WEBHOOK_TOLERANCE: number;
/** Check a webhook's signature (in constant time) and timestamp; its message, or WebhookVerificationError. */
export function verifyWebhook(
  secret: string,
  headers: Headers | Record<string, string | string[] | undefined>,
  body: string | Uint8Array,
  options?: { toleranceSeconds?: number; now?: number },
): WebhookMessage;

export class SessionsClient {
  constructor(baseUrl: string, options?: ClientOptions);
  new(userId: UserId, ip: string, options?: { extra?: Extra; ttl?: number; idempotencyKey?: string }): Promise<Session>;
  get(token: string, options?: { ip?: string; extra?: Extra }): Promise<Session>;
  delete(token: string): Promise<Session>;
  rotate(token: string): Promise<Session>;
  byId(id: string): Promise<SessionById>;
  deleteById(id: string): Promise<SessionById>;
  /** Keep one session: `keep` (a token) or `keepId` (an id), not both. */
  deleteUser(userId: UserId, options?: { keep?: string; keepId?: string }): Promise<number>;
  deleteIp(ip: string): Promise<number>;
  count(kind: 'user', key: UserId): Promise<number>;
  count(kind: 'ip', key: string): Promise<number>;
  countUser(userId: UserId): Promise<number>;
  /** Sessions, or SessionByIds from a service that lists without tokens (SESSIONS_LISTINGS=ids). */
  byUser(userId: UserId, options?: { pageSize?: number }): AsyncIterable<Session | SessionById>;
  byIp(ip: string, options?: { pageSize?: number }): AsyncIterable<Session | SessionById>;
  /** One page of the event feed (SESSIONS_EVENTS=on); `wait` long-polls, in seconds (up to 30). */
  events(after?: number, options?: { limit?: number; wait?: number }): Promise<EventsPage>;
  /** Every event after `after`, following the feed (`wait`, 30 s by default), or up to the newest with `wait: null`. */
  followEvents(after?: number, options?: { limit?: number; wait?: number | null }): AsyncIterable<SessionEvent>;
}
