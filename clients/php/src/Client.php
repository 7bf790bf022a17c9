<?php

declare(strict_types=1);

namespace Sessions\Client;

use Sessions\Client\Exception\InvalidInputException;
use Sessions\Client\Exception\NotFoundException;
use Sessions\Client\Exception\UnavailableException;

/**
 * A client for the sessions service, on ext-curl.
 *
 * Tokens travel in the X-Session-Token header, never in URLs; extra data as JSON, so that
 * `null` removes a key and nested arrays stay nested. User ids are PHP ints (64-bit: the
 * service's largest id, 2^63-1, is PHP_INT_MAX). After an unavailable answer the client waits
 * the Retry-After the service sent and tries again, as the API document says (RETRY,
 * RETRY_SAFE; see README.md).
 */
final class Client
{
    /** Versioned with the service (Composer takes a release's version from its tag). */
    public const VERSION = '0.1.0';

    /**
     * Every error code of the API, by the family of exception it is raised as: the API
     * document's `x-family`. A code this client does not know (a later release's) is an
     * InvalidInputException with a 4xx status, an UnavailableException with any other.
     */
    public const ERROR_FAMILIES = [
        'token_not_found' => NotFoundException::class,
        // No such path: a wrong base URL, or a later release's method; never "no session".
        'not_found' => InvalidInputException::class,
        'bad_request' => InvalidInputException::class,
        'invalid_user_id' => InvalidInputException::class,
        'invalid_ip' => InvalidInputException::class,
        'invalid_extra' => InvalidInputException::class,
        'invalid_ttl' => InvalidInputException::class,
        'invalid_limit' => InvalidInputException::class,
        'invalid_cursor' => InvalidInputException::class,
        'unauthorized' => InvalidInputException::class,
        'method_not_allowed' => InvalidInputException::class,
        'expectation_failed' => InvalidInputException::class,
        'payload_too_large' => InvalidInputException::class,
        'request_timeout' => InvalidInputException::class,
        'idempotency_conflict' => InvalidInputException::class,
        'storage_unavailable' => UnavailableException::class,
        'storage_full' => UnavailableException::class,
        'storage_write_failed' => UnavailableException::class,
        'overloaded' => UnavailableException::class,
        'internal_error' => UnavailableException::class,
    ];

    /**
     * When a call is repeated after an error code (the API document's `x-retry`): `always`
     * (nothing was done), `if_safe` (when the call is safe to repeat, RETRY_SAFE), `never`
     * (every code not here, `internal_error` included: a bug, which a second does not mend).
     */
    public const RETRY = [
        'overloaded' => 'always',
        'storage_unavailable' => 'if_safe',
        'storage_full' => 'if_safe',
        'storage_write_failed' => 'if_safe',
        'service_unavailable' => 'if_safe', // no answer at all: this client's own code
        'token_not_found' => 'never',
        'not_found' => 'never',
        'bad_request' => 'never',
        'invalid_user_id' => 'never',
        'invalid_ip' => 'never',
        'invalid_extra' => 'never',
        'invalid_ttl' => 'never',
        'invalid_limit' => 'never',
        'invalid_cursor' => 'never',
        'unauthorized' => 'never',
        'method_not_allowed' => 'never',
        'expectation_failed' => 'never',
        'payload_too_large' => 'never',
        'request_timeout' => 'never',
        'idempotency_conflict' => 'never',
        'internal_error' => 'never',
    ];

    /** Whether each method may be repeated without doing its work twice: `x-retry-safe`. */
    public const RETRY_SAFE = [
        '/new' => false,
        '/get' => true,
        '/del' => false,
        '/user' => true,
        '/ip' => true,
        '/user/del' => false,
        '/ip/del' => false,
        '/rotate' => false,
        '/user/count' => true,
    ];

    /** The header that makes a method safe to repeat: `x-retry-safe-with`. */
    public const RETRY_SAFE_WITH = ['/new' => 'Idempotency-Key'];

    private readonly string $baseUrl;
    /** @var (callable(int, UnavailableException, float): void)|null */
    private $onRetry;

    /**
     * @param string $baseUrl where the service answers, e.g. http://127.0.0.1:8080
     * @param string|null $apiKey one of the service's SESSIONS_API_KEYS, sent as a bearer token
     * @param float $timeout seconds per attempt: a call safe to repeat may take $retries + 1
     * @param int $retries retries after an unavailable answer, as RETRY says
     * @param (callable(int, UnavailableException, float): void)|null $onRetry called before
     *        each retry with its number, the error and the seconds the client will wait
     * @param float|null $deadline seconds a call may take as a whole, retries and their waits
     *        included (none by default)
     */
    public function __construct(
        string $baseUrl,
        private readonly ?string $apiKey = null,
        private readonly float $timeout = 2.0,
        private readonly int $retries = 2,
        ?callable $onRetry = null,
        private readonly ?float $deadline = null,
    ) {
        $this->baseUrl = rtrim($baseUrl, '/');
        $parts = parse_url($this->baseUrl);
        if ($parts === false || !isset($parts['scheme'], $parts['host'])) {
            throw new \InvalidArgumentException("not a URL: {$baseUrl}");
        }
        if ($apiKey !== null) {
            self::headerValue('the API key', $apiKey);
        }
        $this->onRetry = $onRetry;
    }

    /**
     * Open a session. With an $idempotencyKey (a fresh UUID per sign-in attempt), a retry is
     * safe: the same key and parameters answer the session the first call opened.
     *
     * @param array<string, mixed>|null $extra
     */
    public function new(int $userId, string $ip, ?array $extra = null, ?int $ttl = null, ?string $idempotencyKey = null): Session
    {
        $query = ['user_id' => $userId, 'ip' => $ip];
        if ($ttl !== null) {
            $query['ttl'] = $ttl;
        }
        $headers = $idempotencyKey === null ? [] : ['Idempotency-Key' => $idempotencyKey];
        [$data] = $this->call('/new', $query, extra: $extra, headers: $headers);
        return Session::fromArray($data);
    }

    /**
     * The live session of the token, marked active now; with $ip, moved to that address.
     *
     * @param array<string, mixed>|null $extra merged into the session's extra data
     * @throws NotFoundException when there is no such live session
     */
    public function get(string $token, ?string $ip = null, ?array $extra = null): Session
    {
        [$data] = $this->call('/get', $ip === null ? [] : ['ip' => $ip], token: $token, extra: $extra);
        return Session::fromArray($data);
    }

    /** End the session; the session as it was. */
    public function delete(string $token): Session
    {
        return Session::fromArray($this->call('/del', [], token: $token)[0]);
    }

    /** The same session under a new token; the old one stops working at once. */
    public function rotate(string $token): Session
    {
        return Session::fromArray($this->call('/rotate', [], token: $token)[0]);
    }

    /** End every live session of the user but $keep (a token of theirs); how many ended. */
    public function deleteUser(int $userId, ?string $keep = null): int
    {
        return (int) $this->call('/user/del', ['id' => $userId], token: $keep)[0]['deleted'];
    }

    /** End every live session seen from the address; how many ended. */
    public function deleteIp(string $ip): int
    {
        return (int) $this->call('/ip/del', ['ip' => $ip])[0]['deleted'];
    }

    /** How many live sessions the user has. */
    public function countUser(int $userId): int
    {
        return (int) $this->call('/user/count', ['id' => $userId])[0]['count'];
    }

    /**
     * The user's live sessions, newest opened first, fetched a page at a time as you iterate.
     *
     * @return \Generator<int, Session>
     */
    public function byUser(int $userId, ?int $pageSize = null): \Generator
    {
        return $this->pages('/user', ['id' => $userId], $pageSize);
    }

    /**
     * The live sessions last seen from the address, a page at a time as you iterate.
     *
     * @return \Generator<int, Session>
     */
    public function byIp(string $ip, ?int $pageSize = null): \Generator
    {
        return $this->pages('/ip', ['ip' => $ip], $pageSize);
    }

    /**
     * @param array<string, int|string> $query
     * @return \Generator<int, Session>
     */
    private function pages(string $path, array $query, ?int $pageSize): \Generator
    {
        if ($pageSize !== null) {
            $query['limit'] = $pageSize;
        }
        $url = $this->url($path, $query);
        while ($url !== null) {
            [$data, $next] = $this->send($url, null, null, [], self::RETRY_SAFE[$path]);
            foreach ($data as $item) {
                yield Session::fromArray($item);
            }
            // The next page's URL carries its whole query, relative to this page's URL.
            $url = $next === null ? null : self::resolve($url, $next);
        }
    }

    /** @param array<string, int|string> $query */
    private function url(string $path, array $query): string
    {
        return $this->baseUrl . $path . ($query === [] ? '' : '?' . http_build_query($query, '', '&', PHP_QUERY_RFC3986));
    }

    /**
     * @param array<string, int|string> $query
     * @param array<string, mixed>|null $extra
     * @param array<string, string> $headers
     * @return array{0: mixed, 1: string|null}
     */
    private function call(string $path, array $query, ?string $token = null, ?array $extra = null, array $headers = []): array
    {
        $making = self::RETRY_SAFE_WITH[$path] ?? null;
        $safe = self::RETRY_SAFE[$path] || ($making !== null && isset($headers[$making]));
        return $this->send($this->url($path, $query), $token, $extra, $headers, $safe);
    }

    /**
     * One call, repeated after an unavailable answer as its code's rule says (RETRY), $safe:
     * whether this call may be; within the deadline, when there is one, waits included.
     *
     * @param array<string, mixed>|null $extra
     * @param array<string, string> $headers
     * @return array{0: mixed, 1: string|null} the data and the next page's URL, if any
     */
    private function send(string $url, ?string $token, ?array $extra, array $headers, bool $safe): array
    {
        if ($this->apiKey !== null) {
            $headers['Authorization'] = 'Bearer ' . $this->apiKey;
        }
        if ($token !== null) {
            $headers['X-Session-Token'] = $token;
        }
        $lines = [];
        foreach ($headers as $name => $value) {
            $lines[] = $name . ': ' . self::headerValue($name, $value);
        }
        $body = '';
        if ($extra !== null) {
            $lines[] = 'Content-Type: application/json';
            try {
                $body = json_encode($extra === [] ? new \stdClass() : $extra, JSON_THROW_ON_ERROR | JSON_PRESERVE_ZERO_FRACTION);
            } catch (\JsonException $error) { // INF, NAN, a string not in UTF-8: the service could not take it either
                throw new InvalidInputException('invalid_extra', "extra data cannot be sent as JSON: {$error->getMessage()}", previous: $error);
            }
        }
        $ends = $this->deadline === null ? null : hrtime(true) / 1e9 + $this->deadline;
        for ($attempt = 0; ; $attempt++) {
            try {
                $timeout = $ends === null ? $this->timeout : min($this->timeout, $ends - hrtime(true) / 1e9);
                if ($timeout <= 0) {
                    throw new UnavailableException('service_unavailable', "no answer within the call's deadline of {$this->deadline} s");
                }
                return $this->once($url, $lines, $body, $timeout);
            } catch (UnavailableException $error) {
                $rule = self::RETRY[$error->getErrorCode()] ?? 'never';
                $again = $attempt < $this->retries && ($rule === 'always' || ($rule === 'if_safe' && $safe));
                if (!$again) {
                    throw $error;
                }
                $wait = $error->getRetryAfter() ?? 0.1 * 2 ** $attempt;
                if ($ends !== null && hrtime(true) / 1e9 + $wait >= $ends) {
                    throw $error; // the retry would start after the deadline
                }
                if ($this->onRetry !== null) {
                    ($this->onRetry)($attempt + 1, $error, $wait);
                }
                usleep((int) ($wait * 1_000_000));
            }
        }
    }

    /**
     * What an HTTP header may carry here: printable ASCII. CR and LF would end the header and
     * start another (`X-Evil: 1`), other control characters and non-ASCII have no safe
     * encoding; refused before anything is sent.
     */
    private static function headerValue(string $name, string $value): string
    {
        if (preg_match('/^[\x20-\x7e]*$/D', $value) !== 1) {
            throw new InvalidInputException('bad_request', "{$name} cannot go in an HTTP header: only printable ASCII can (no CR, LF or other control characters, no non-ASCII); nothing was sent");
        }
        return $value;
    }

    /**
     * @param list<string> $headers
     * @return array{0: mixed, 1: string|null}
     */
    private function once(string $url, array $headers, string $body, float $timeout): array
    {
        $received = [];
        $curl = curl_init($url);
        curl_setopt_array($curl, [
            CURLOPT_POST => true,
            CURLOPT_POSTFIELDS => $body,
            CURLOPT_HTTPHEADER => [...$headers, 'Expect:'],
            CURLOPT_RETURNTRANSFER => true,
            CURLOPT_TIMEOUT_MS => max(1, (int) ceil($timeout * 1000)),
            CURLOPT_NOSIGNAL => true, // timeouts under a second, whatever resolver curl has
            CURLOPT_HEADERFUNCTION => static function ($handle, string $line) use (&$received): int {
                $parts = explode(':', $line, 2);
                if (count($parts) === 2) {
                    $received[strtolower(trim($parts[0]))] = trim($parts[1]);
                }
                return strlen($line);
            },
        ]);
        $text = curl_exec($curl);
        $status = (int) curl_getinfo($curl, CURLINFO_RESPONSE_CODE);
        $failure = curl_error($curl);
        curl_close($curl);
        if ($text === false || $text === true) {
            throw new UnavailableException('service_unavailable', "the sessions service could not be reached: {$failure}");
        }
        try {
            $envelope = json_decode($text, true, 512, JSON_THROW_ON_ERROR | JSON_BIGINT_AS_STRING);
        } catch (\JsonException) {
            throw new UnavailableException('service_unavailable', "not a sessions service answer (HTTP {$status})", $status);
        }
        if (!is_array($envelope) || !isset($envelope['status'])) {
            throw new UnavailableException('service_unavailable', "not a sessions service answer (HTTP {$status})", $status);
        }
        if ($envelope['status'] === 'success') {
            return [$envelope['data'], self::nextLink($received['link'] ?? null)];
        }
        $code = (string) ($envelope['code'] ?? 'internal_error');
        $class = self::ERROR_FAMILIES[$code] ?? ($status >= 400 && $status < 500 ? InvalidInputException::class : UnavailableException::class);
        $retryAfter = isset($received['retry-after']) && is_numeric($received['retry-after']) ? (float) $received['retry-after'] : null;
        throw new $class($code, (string) ($envelope['message'] ?? ''), $status, $retryAfter);
    }

    /**
     * A URL reference resolved against the URL it was found at (RFC 3986, section 5.2): a
     * Link of `user?id=1&after=...` from `http://gateway/sessions/user?id=1` is
     * `http://gateway/sessions/user?id=1&after=...`, keeping the gateway's path prefix.
     *
     * @internal public for its tests only
     */
    public static function resolve(string $base, string $reference): string
    {
        if (preg_match('/^[A-Za-z][A-Za-z0-9+.-]*:/', $reference) === 1) {
            return $reference;
        }
        preg_match('#^([A-Za-z][A-Za-z0-9+.-]*:)(//[^/?\#]*)?([^?\#]*)(\?[^\#]*)?#', $base, $parts);
        [$scheme, $authority, $path, $query] = [$parts[1], $parts[2] ?? '', $parts[3] ?? '', $parts[4] ?? ''];
        $reference = explode('#', $reference, 2)[0];
        if (str_starts_with($reference, '//')) {
            return $scheme . $reference;
        }
        if ($reference === '') {
            return $scheme . $authority . $path . $query;
        }
        if (str_starts_with($reference, '?')) {
            return $scheme . $authority . $path . $reference;
        }
        [$refPath, $refQuery] = array_pad(explode('?', $reference, 2), 2, null);
        if (!str_starts_with($refPath, '/')) {
            $directory = $authority !== '' && $path === '' ? '/' : substr($path, 0, (int) strrpos($path, '/') + 1);
            $refPath = $directory . $refPath;
        }
        return $scheme . $authority . self::withoutDotSegments($refPath) . ($refQuery === null ? '' : '?' . $refQuery);
    }

    /** The path with its `.` and `..` segments applied (RFC 3986, section 5.2.4). */
    private static function withoutDotSegments(string $path): string
    {
        $segments = explode('/', $path);
        $last = count($segments) - 1;
        $output = [];
        foreach ($segments as $i => $segment) {
            if ($segment !== '.' && $segment !== '..') {
                $output[] = $segment;
                continue;
            }
            if ($segment === '..' && count($output) > 1) {
                array_pop($output);
            }
            if ($i === $last) {
                $output[] = ''; // a path that ends in `.` or `..` names a directory
            }
        }
        return implode('/', $output);
    }

    private static function nextLink(?string $header): ?string
    {
        if ($header === null) {
            return null;
        }
        foreach (explode(',', $header) as $part) {
            if (preg_match('/^\s*<([^>]*)>\s*;(.*)$/', $part, $match) === 1
                && preg_match('/(^|;)\s*rel="?next"?\s*(;|$)/', $match[2]) === 1) {
                return $match[1];
            }
        }
        return null;
    }
}
