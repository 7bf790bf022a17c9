// A client for the sessions service, on the platform's fetch: no dependencies.
//
// User ids are BigInts in every session this client returns: the service's ids go up to
// 2^63-1 and JavaScript's numbers are exact only up to 2^53, so the client asks the service
// for ids as strings (X-User-Id-Format: string) and turns them into BigInts. Methods take
// an id as a bigint, a safe integer number, or a string of decimal digits.

const ID_FORMAT = { 'X-User-Id-Format': 'string' };
const MAX_USER_ID = 2n ** 63n - 1n;

// Every error code of the API, by the family a caller acts on.
const FAMILIES = {
  token_not_found: 'notFound',
  not_found: 'notFound',
  bad_request: 'invalidInput',
  invalid_user_id: 'invalidInput',
  invalid_ip: 'invalidInput',
  invalid_extra: 'invalidInput',
  invalid_ttl: 'invalidInput',
  invalid_limit: 'invalidInput',
  invalid_cursor: 'invalidInput',
  unauthorized: 'invalidInput',
  method_not_allowed: 'invalidInput',
  expectation_failed: 'invalidInput',
  payload_too_large: 'invalidInput',
  request_timeout: 'invalidInput',
  idempotency_conflict: 'invalidInput',
  storage_unavailable: 'unavailable',
  storage_full: 'unavailable',
  storage_write_failed: 'unavailable',
  overloaded: 'unavailable',
  internal_error: 'unavailable',
};

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

const CLASSES = { notFound: NotFoundError, invalidInput: InvalidInputError, unavailable: UnavailableError };

/** The error class for an API error code (UnavailableError for codes it does not know). */
export function errorClass(code) {
  return CLASSES[FAMILIES[code]] ?? UnavailableError;
}

/** The error codes this client knows, for checking against the service's API document. */
export const ERROR_CODES = Object.freeze(Object.keys(FAMILIES));

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
  constructor(baseUrl, { apiKey = null, timeoutMs = 2000, retries = 2, onRetry = null, fetch: fetchImpl = globalThis.fetch } = {}) {
    this.baseUrl = baseUrl.replace(/\/+$/, '');
    this.apiKey = apiKey;
    this.timeoutMs = timeoutMs;
    this.retries = retries;
    this.onRetry = onRetry;
    this.fetch = fetchImpl;
  }

  /** Open a session. With `idempotencyKey`, a retry after an unavailable answer is safe. */
  async new(userId, ip, { extra, ttl, idempotencyKey } = {}) {
    const query = { user_id: userIdParam(userId), ip };
    if (ttl !== undefined) query.ttl = String(ttl);
    const headers = idempotencyKey === undefined ? {} : { 'Idempotency-Key': idempotencyKey };
    const { data } = await this.#call('/new', query, { extra, headers, idempotent: idempotencyKey !== undefined });
    return toSession(data);
  }

  /** The live session of the token, marked active now; with `ip`, moved to that address. */
  async get(token, { ip, extra } = {}) {
    const query = ip === undefined ? {} : { ip };
    const { data } = await this.#call('/get', query, { token, extra, idempotent: true });
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
    const query = { id: userIdParam(userId) };
    if (keep !== undefined) query.except = keep;
    return (await this.#call('/user/del', query)).data.deleted;
  }

  /** End every live session seen from the address; how many ended. */
  async deleteIp(ip) {
    return (await this.#call('/ip/del', { ip })).data.deleted;
  }

  /** How many live sessions the user has. */
  async countUser(userId) {
    return (await this.#call('/user/count', { id: userIdParam(userId) }, { idempotent: true })).data.count;
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
      const { data, next } = await this.#send(url, { idempotent: true });
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
    return this.#send(this.#url(path, query), options);
  }

  // One call, retried after an answer that says nothing was done (`overloaded`), or, when
  // the call may be repeated safely, after any unavailable answer or no answer at all.
  async #send(url, { token, extra, headers = {}, idempotent = false }) {
    const sent = { ...ID_FORMAT, ...headers };
    if (this.apiKey) sent.Authorization = `Bearer ${this.apiKey}`;
    if (token !== undefined) sent['X-Session-Token'] = token;
    let body;
    if (extra !== undefined) {
      sent['Content-Type'] = 'application/json';
      body = JSON.stringify(extra);
    }
    for (let attempt = 0; ; attempt += 1) {
      try {
        return await this.#once(url, sent, body);
      } catch (error) {
        const again = error instanceof UnavailableError
          && attempt < this.retries
          && (idempotent || error.code === 'overloaded');
        if (!again) throw error;
        const waitMs = 1000 * (error.retryAfter ?? 2 ** attempt * 0.1);
        if (this.onRetry) await this.onRetry({ attempt: attempt + 1, error, waitMs });
        await sleep(waitMs);
      }
    }
  }

  async #once(url, headers, body) {
    let response;
    let text;
    try {
      response = await this.fetch(url, {
        method: 'POST',
        headers,
        body,
        signal: AbortSignal.timeout(this.timeoutMs),
      });
      text = await response.text();
    } catch (cause) {
      throw new UnavailableError('service_unavailable', `the sessions service could not be reached: ${cause.message}`, { cause });
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
    const ErrorClass = errorClass(envelope.code);
    throw new ErrorClass(envelope.code, envelope.message, {
      status: response.status,
      retryAfter: Number.isFinite(retryAfter) ? retryAfter : null,
    });
  }
}
