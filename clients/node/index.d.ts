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
  /** Per attempt; default 2000. */
  timeoutMs?: number;
  /** Retries after an unavailable answer (see the README for which calls); default 2. */
  retries?: number;
  /** Called before each retry, after the wait is chosen. */
  onRetry?: ((event: RetryEvent) => void | Promise<void>) | null;
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

export function errorClass(code: string): typeof NotFoundError | typeof InvalidInputError | typeof UnavailableError;
export const ERROR_CODES: readonly string[];

export class SessionsClient {
  constructor(baseUrl: string, options?: ClientOptions);
  new(userId: UserId, ip: string, options?: { extra?: Extra; ttl?: number; idempotencyKey?: string }): Promise<Session>;
  get(token: string, options?: { ip?: string; extra?: Extra }): Promise<Session>;
  delete(token: string): Promise<Session>;
  rotate(token: string): Promise<Session>;
  deleteUser(userId: UserId, options?: { keep?: string }): Promise<number>;
  deleteIp(ip: string): Promise<number>;
  countUser(userId: UserId): Promise<number>;
  byUser(userId: UserId, options?: { pageSize?: number }): AsyncIterable<Session>;
  byIp(ip: string, options?: { pageSize?: number }): AsyncIterable<Session>;
}
