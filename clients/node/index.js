// A client for the sessions service, on the platform's fetch: no dependencies.
//
// User ids are BigInts in every session this client returns: the service's ids go up to
// 2^63-1 and JavaScript's numbers are exact only up to 2^53, so the client asks the service
// for ids as strings (X-User-Id-Format: string) and turns them into BigInts. Methods take
// an id as a bigint, a safe integer number, or a string of decimal digits.

const ID_FORMAT = { 'X-User-Id-Format': 'string' };
const MAX_USER_ID = 2n ** 63n - 1n;

// Every error code of the API: the family a caller acts on, and whether a call is repeated
// after it: 'always' (nothing was done), 'if_safe' (when the call is safe to repeat, see
// RETRY_SAFE) or 'never'. Both are the API document's (`x-family`, `x-retry`); the tests
// check them against it.
const CODES = {
  token_not_found: ['not_found', 'never'],
  not_found: ['invalid_input', 'never'], // no such path: a wrong base URL, or a later release's method
  bad_request: ['invalid_input', 'never'],
  invalid_user_id: ['invalid_input', 'never'],
  invalid_ip: ['invalid_input', 'never'],
  invalid_extra: ['invalid_input', 'never'],
  invalid_ttl: ['invalid_input', 'never'],
  invalid_limit: ['invalid_input', 'never'],
  invalid_cursor: ['invalid_input', 'never'],
  unauthorized: ['invalid_input', 'never'],
  method_not_allowed: ['invalid_input', 'never'],
  expectation_failed: ['invalid_input', 'never'],
  payload_too_large: ['invalid_input', 'never'],
  request_timeout: ['invalid_input', 'never'],
  idempotency_conflict: ['invalid_input', 'never'],
  storage_unavailable: ['unavailable', 'if_safe'],
  storage_full: ['unavailable', 'if_safe'],
  storage_write_failed: ['unavailable', 'if_safe'],
  overloaded: ['unavailable', 'always'],
  internal_error: ['unavailable', 'never'], // a bug, which a second does not mend
  service_unavailable: ['unavailable', 'if_safe'], // no answer at all: this client's own code
};

/** After which error codes a call is repeated (a code not here: never). */
export const RETRY = Object.freeze(Object.fromEntries(Object.entries(CODES).map(([code, [, retry]]) => [code, retry])));

/** Whether each method may be repeated without doing its work twice (`x-retry-safe`). */
export const RETRY_SAFE = Object.freeze({
  '/new': false,
  '/get': true,
  '/del': false,
  '/user': true,
  '/ip': true,
  '/user/del': false,
  '/ip/del': false,
  '/rotate': false,
  '/user/count': true,
});

/** The header that makes a method safe to repeat (`x-retry-safe-with`). */
export const RETRY_SAFE_WITH = Object.freeze({ '/new': 'Idempotency-Key' });

/** An error answer of the service, or no answer: `code` is the API's error code. */
export class SessionsError extends Error {
  constructor(code, message, { status = null, retryAfter = null, cause } = {}) {
    super(message || code, cause === undefined ? undefined : { cause });
    this.name = new.target.name;
    this.code = code;
    this.status = status;
    this.retryAfter = retryAfter;
  }
}

/** The session is not there (signed out, expired, never was): ask the user to sign in. */
export class NotFoundError extends SessionsError {}

/** The request was wrong; sending it again as it is will not help. */
export class InvalidInputError extends SessionsError {}

/** The service cannot answer now; not the same as "no session". `retryAfter`: seconds. */
export class UnavailableError extends SessionsError {}

const CLASSES = { not_found: NotFoundError, invalid_input: InvalidInputError, unavailable: UnavailableError };

/**
 * The error class for an API error code; for a code this client does not know (a later
 * release's), InvalidInputError with a 4xx status and UnavailableError with any other.
 */
export function errorClass(code, status = null) {
  const family = CODES[code]?.[0] ?? (status >= 400 && status < 500 ? 'invalid_input' : 'unavailable');
  return CLASSES[family];
}

/** The error codes this client knows, for checking against the service's API document. */
export const ERROR_CODES = Object.freeze(Object.keys(CODES));

function userIdParam(userId) {
  let id;
  if (typeof userId === 'bigint') {
    id = userId;
  } else if (typeof userId === 'number' && Number.isSafeInteger(userId)) {
    id = BigInt(userId);
  } else if (typeof userId === 'string' && /^[0-9]+$/.test(userId)) {
    id = BigInt(userId);
  } else {
    throw new InvalidInputError('invalid_user_id', `user ids are bigints, safe integers or digit strings, not ${typeof userId === 'number' ? userId : typeof userId}`);
  }
  if (id < 1n || id > MAX_USER_ID) {
    throw new InvalidInputError('invalid_user_id', `user ids run from 1 to ${MAX_USER_ID}`);
  }
  return id.toString();
}

// What an HTTP header may carry here: printable ASCII. CR and LF would end the header (and
// start another), other control characters and non-ASCII have no safe encoding.
function headerValue(name, value) {
  if (typeof value !== 'string' || !/^[\x20-\x7e]*$/.test(value)) {
    throw new InvalidInputError('bad_request', `${name} cannot go in an HTTP header: only printable ASCII can (no CR, LF or other control characters, no non-ASCII); nothing was sent`);
  }
  return value;
}

function toSession(data) {
  return Object.freeze({
    ip: data.ip,
    extra: data.extra,
    userId: BigInt(data.user_id),
    create: data.create,
    activity: data.activity,
    token: data.token,
  });
}

function nextLink(header) {
  if (!header) return null;
  for (const part of header.split(',')) {
    const match = /^\s*<([^>]*)>\s*;(.*)$/.exec(part);
    if (match && /(^|;)\s*rel="?next"?\s*(;|$)/.test(match[2])) return match[1];
  }
  return null;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class SessionsClient {
  /**
   * @param {string} baseUrl where the service answers, e.g. http://127.0.0.1:8080
   * @param {object} [options]
   */
  constructor(baseUrl, { apiKey = null, timeoutMs = 2000, deadlineMs = null, retries = 2, onRetry = null, fetch: fetchImpl = globalThis.fetch } = {}) {
    this.baseUrl = baseUrl.replace(/\/+$/, '');
    this.apiKey = apiKey ? headerValue('the API key', apiKey) : apiKey;
    this.timeoutMs = timeoutMs;
    this.deadlineMs = deadlineMs;
    this.retries = retries;
    this.onRetry = onRetry;
    this.fetch = fetchImpl;
  }

  /** Open a session. With `idempotencyKey`, a retry after an unavailable answer is safe. */
  async new(userId, ip, { extra, ttl, idempotencyKey } = {}) {
    const query = { user_id: userIdParam(userId), ip };
    if (ttl !== undefined) query.ttl = String(ttl);
    const headers = idempotencyKey === undefined ? {} : { 'Idempotency-Key': headerValue('the key', idempotencyKey) };
    const { data } = await this.#call('/new', query, { extra, headers });
    return toSession(data);
  }

  /** The live session of the token, marked active now; with `ip`, moved to that address. */
  async get(token, { ip, extra } = {}) {
    const query = ip === undefined ? {} : { ip };
    const { data } = await this.#call('/get', query, { token, extra });
    return toSession(data);
  }

  /** End the session; the session as it was. */
  async delete(token) {
    return toSession((await this.#call('/del', {}, { token })).data);
  }

  /** The same session under a new token; the old one stops working at once. */
  async rotate(token) {
    return toSession((await this.#call('/rotate', {}, { token })).data);
  }

  /** End every live session of the user but `keep` (a token of theirs); how many ended. */
  async deleteUser(userId, { keep } = {}) {
    return (await this.#call('/user/del', { id: userIdParam(userId) }, { token: keep })).data.deleted;
  }

  /** End every live session seen from the address; how many ended. */
  async deleteIp(ip) {
    return (await this.#call('/ip/del', { ip })).data.deleted;
  }

  /** How many live sessions the user has. */
  async countUser(userId) {
    return (await this.#call('/user/count', { id: userIdParam(userId) })).data.count;
  }

  /** The user's live sessions, newest opened first, fetched a page at a time as you iterate. */
  byUser(userId, { pageSize } = {}) {
    return this.#pages('/user', { id: userIdParam(userId) }, pageSize);
  }

  /** The live sessions last seen from the address, a page at a time as you iterate. */
  byIp(ip, { pageSize } = {}) {
    return this.#pages('/ip', { ip }, pageSize);
  }

  async *#pages(path, query, pageSize) {
    if (pageSize !== undefined) query.limit = String(pageSize);
    let url = this.#url(path, query);
    while (url !== null) {
      const { data, next } = await this.#send(url, { safe: RETRY_SAFE[path] });
      for (const item of data) yield toSession(item);
      // The next page's URL carries its whole query, relative to this page's URL (so that
      // it keeps a gateway's path prefix).
      url = next === null ? null : new URL(next, url).toString();
    }
  }

  #url(path, query) {
    const url = new URL(this.baseUrl + path);
    for (const [name, value] of Object.entries(query)) url.searchParams.set(name, value);
    return url.toString();
  }

  #call(path, query, options = {}) {
    const making = RETRY_SAFE_WITH[path];
    const safe = RETRY_SAFE[path] || (making !== undefined && making in (options.headers ?? {}));
    return this.#send(this.#url(path, query), { ...options, safe });
  }

  // One call, repeated after an unavailable answer as its code's rule says (RETRY), `safe`:
  // whether this call may be; within `deadlineMs`, when there is one, waits included.
  async #send(url, { token, extra, headers = {}, safe = false }) {
    const sent = { ...ID_FORMAT, ...headers };
    if (this.apiKey) sent.Authorization = `Bearer ${this.apiKey}`;
    if (token !== undefined) sent['X-Session-Token'] = headerValue('the token', token);
    let body;
    if (extra !== undefined) {
      try {
        body = JSON.stringify(extra);
      } catch (cause) { // a BigInt, a cycle: what the service could not take either
        throw new InvalidInputError('invalid_extra', `extra data cannot be sent as JSON: ${cause.message}`, { cause });
      }
      sent['Content-Type'] = 'application/json';
    }
    const ends = this.deadlineMs === null ? null : performance.now() + this.deadlineMs;
    for (let attempt = 0; ; attempt += 1) {
      try {
        const timeoutMs = ends === null ? this.timeoutMs : Math.min(this.timeoutMs, ends - performance.now());
        if (timeoutMs <= 0) throw new UnavailableError('service_unavailable', `no answer within the call's deadline of ${this.deadlineMs} ms`);
        return await this.#once(url, sent, body, timeoutMs);
      } catch (error) {
        const rule = error instanceof UnavailableError ? RETRY[error.code] : 'never';
        const again = attempt < this.retries && (rule === 'always' || (rule === 'if_safe' && safe));
        if (!again) throw error;
        const waitMs = 1000 * (error.retryAfter ?? 2 ** attempt * 0.1);
        if (ends !== null && performance.now() + waitMs >= ends) throw error; // it would start too late
        if (this.onRetry) await this.onRetry({ attempt: attempt + 1, error, waitMs });
        await sleep(waitMs);
      }
    }
  }

  async #once(url, headers, body, timeoutMs) {
    let response;
    let text;
    try {
      response = await this.fetch(url, {
        method: 'POST',
        headers,
        body,
        signal: AbortSignal.timeout(Math.max(1, Math.ceil(timeoutMs))),
      });
      text = await response.text();
    } catch (cause) {
      const why = cause?.name === 'TimeoutError' ? `no answer within ${Math.ceil(timeoutMs)} ms` : cause.message;
      throw new UnavailableError('service_unavailable', `the sessions service could not be reached: ${why}`, { cause });
    }
    let envelope;
    try {
      envelope = JSON.parse(text);
    } catch {
      throw new UnavailableError('service_unavailable', `not a sessions service answer (HTTP ${response.status})`, { status: response.status });
    }
    if (envelope.status === 'success') {
      return { data: envelope.data, next: nextLink(response.headers.get('link')) };
    }
    const retryAfter = Number.parseFloat(response.headers.get('retry-after'));
    const ErrorClass = errorClass(envelope.code, response.status);
    throw new ErrorClass(envelope.code, envelope.message, {
      status: response.status,
      retryAfter: Number.isFinite(retryAfter) ? retryAfter : null,
    });
  }
}
