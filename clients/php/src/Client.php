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
 * the Retry-After the service sent and tries again, for the calls that are safe to repeat
 * (see README.md).
 */
final class Client
{
    /** Every error code of the API, by the family of exception it is raised as. */
    public const ERROR_FAMILIES = [
        'token_not_found' => NotFoundException::class,
        'not_found' => NotFoundException::class,
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

    private readonly string $baseUrl;
    /** @var (callable(int, UnavailableException, float): void)|null */
    private $onRetry;

    /**
     * @param string $baseUrl where the service answers, e.g. http://127.0.0.1:8080
     * @param string|null $apiKey one of the service's SESSIONS_API_KEYS, sent as a bearer token
     * @param float $timeout seconds per attempt
     * @param int $retries retries after an unavailable answer, for calls safe to repeat
     * @param (callable(int, UnavailableException, float): void)|null $onRetry called before
     *        each retry with its number, the error and the seconds the client will wait
     */
    public function __construct(
        string $baseUrl,
        private readonly ?string $apiKey = null,
        private readonly float $timeout = 2.0,
        private readonly int $retries = 2,
        ?callable $onRetry = null,
    ) {
        $this->baseUrl = rtrim($baseUrl, '/');
        $parts = parse_url($this->baseUrl);
        if ($parts === false || !isset($parts['scheme'], $parts['host'])) {
            throw new \InvalidArgumentException("not a URL: {$baseUrl}");
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
        $headers = $idempotencyKey === null ? [] : ['Idempotency-Key: ' . $idempotencyKey];
        [$data] = $this->call('/new', $query, extra: $extra, headers: $headers, idempotent: $idempotencyKey !== null);
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
        [$data] = $this->call('/get', $ip === null ? [] : ['ip' => $ip], token: $token, extra: $extra, idempotent: true);
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
        $query = ['id' => $userId];
        if ($keep !== null) {
            $query['except'] = $keep;
        }
        return (int) $this->call('/user/del', $query)[0]['deleted'];
    }

    /** End every live session seen from the address; how many ended. */
    public function deleteIp(string $ip): int
    {
        return (int) $this->call('/ip/del', ['ip' => $ip])[0]['deleted'];
    }

    /** How many live sessions the user has. */
    public function countUser(int $userId): int
    {
        return (int) $this->call('/user/count', ['id' => $userId], idempotent: true)[0]['count'];
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
            [$data, $next] = $this->send($url, null, null, [], true);
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
     * @param list<string> $headers
     * @return array{0: mixed, 1: string|null}
     */
    private function call(
        string $path,
        array $query,
        ?string $token = null,
        ?array $extra = null,
        array $headers = [],
        bool $idempotent = false,
    ): array {
        return $this->send($this->url($path, $query), $token, $extra, $headers, $idempotent);
    }

    /**
     * One call, retried after an answer that says nothing was done (`overloaded`), or, when
     * it may be repeated safely, after any unavailable answer or none at all.
     *
     * @param array<string, mixed>|null $extra
     * @param list<string> $headers
     * @return array{0: mixed, 1: string|null} the data and the next page's path, if any
     */
    private function send(string $url, ?string $token, ?array $extra, array $headers, bool $idempotent): array
    {
        if ($this->apiKey !== null) {
            $headers[] = 'Authorization: Bearer ' . $this->apiKey;
        }
        if ($token !== null) {
            $headers[] = 'X-Session-Token: ' . $token;
        }
        $body = '';
        if ($extra !== null) {
            $headers[] = 'Content-Type: application/json';
            $body = json_encode($extra === [] ? new \stdClass() : $extra, JSON_THROW_ON_ERROR | JSON_PRESERVE_ZERO_FRACTION);
        }
        for ($attempt = 0; ; $attempt++) {
            try {
                return $this->once($url, $headers, $body);
            } catch (UnavailableException $error) {
                $again = $attempt < $this->retries && ($idempotent || $error->getErrorCode() === 'overloaded');
                if (!$again) {
                    throw $error;
                }
                $wait = $error->getRetryAfter() ?? 0.1 * 2 ** $attempt;
                if ($this->onRetry !== null) {
                    ($this->onRetry)($attempt + 1, $error, $wait);
                }
                usleep((int) ($wait * 1_000_000));
            }
        }
    }

    /**
     * @param list<string> $headers
     * @return array{0: mixed, 1: string|null}
     */
    private function once(string $url, array $headers, string $body): array
    {
        $received = [];
        $curl = curl_init($url);
        curl_setopt_array($curl, [
            CURLOPT_POST => true,
            CURLOPT_POSTFIELDS => $body,
            CURLOPT_HTTPHEADER => [...$headers, 'Expect:'],
            CURLOPT_RETURNTRANSFER => true,
            CURLOPT_TIMEOUT_MS => (int) ($this->timeout * 1000),
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
        $class = self::ERROR_FAMILIES[$code] ?? UnavailableException::class;
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
