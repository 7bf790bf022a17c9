<?php

declare(strict_types=1);

namespace Sessions\Client\Tests;

use PHPUnit\Framework\TestCase;
use Sessions\Client\Client;
use Sessions\Client\Exception\InvalidInputException;
use Sessions\Client\Exception\NotFoundException;
use Sessions\Client\Exception\UnavailableException;
use Sessions\Client\Exception\WebhookVerificationException;
use Sessions\Client\Webhook;

/**
 * The client against a real service: SESSIONS_URL, SESSIONS_KEYED_URL and SESSIONS_KEY (the
 * project's suite starts them, tests/test_clients.py), SESSIONS_TARANTOOL_PID (the open
 * service's Tarantool, paused to make it answer 503).
 */
final class ClientTest extends TestCase
{
    private static int $nextUser = 0;
    private Client $sessions;

    protected function setUp(): void
    {
        $url = getenv('SESSIONS_URL');
        if ($url === false) {
            self::fail('SESSIONS_URL is not set: run these tests through the project\'s suite');
        }
        $this->sessions = new Client($url, timeout: 5.0);
        if (self::$nextUser === 0) {
            // Users of their own, so that a second run on the same service starts clean.
            self::$nextUser = (int) (microtime(true) * 1000) * 1000;
        }
    }

    private static function aUser(): int
    {
        return ++self::$nextUser;
    }

    public function testEveryMethodAndErrorCodeOfTheApiDocumentIsInTheClient(): void
    {
        $document = json_decode((string) file_get_contents(__DIR__ . '/../../../openapi.json'), true, 512, JSON_THROW_ON_ERROR);
        $source = (string) file_get_contents(__DIR__ . '/../src/Client.php');
        foreach (array_keys($document['paths']) as $path) {
            self::assertStringContainsString("'{$path}'", $source, "no method for {$path}");
        }
        foreach ($document['components']['schemas']['Error']['properties']['code']['enum'] as $code) {
            self::assertArrayHasKey($code, Client::ERROR_FAMILIES, "no exception for {$code}");
        }
    }

    public function testTheEventPagerFollowsTheFeedAndALongPollOutlastsTheTimeout(): void
    {
        $client = new Client((string) getenv('SESSIONS_URL'), timeout: 1.0);
        $start = 0;
        while (($page = $client->events($start, limit: 1000))['events'] !== []) {
            $start = $page['next'];
        }
        $user = self::aUser();
        $made = $client->new($user, '192.0.2.41');
        $client->delete($made->token);
        $seen = iterator_to_array($client->followEvents($start, limit: 1, wait: null), false);
        $mine = array_values(array_filter($seen, static fn (array $event): bool => $event['user_id'] === $user));
        self::assertSame([['opened', null], ['ended', 'del']], array_map(static fn (array $e): array => [$e['kind'], $e['reason']], $mine));
        self::assertSame($mine[0]['session'], $mine[1]['session']);
        $last = end($seen)['seq'];
        // Nothing comes: the long poll of 2 s outlasts the 1 s timeout and answers an empty page.
        $started = microtime(true);
        $page = $client->events($last, wait: 2);
        self::assertSame([], $page['events']);
        self::assertSame($last, $page['next']);
        self::assertGreaterThan(1.5, microtime(true) - $started);
        try {
            $client->events(0, wait: 31);
            self::fail('wait=31 was taken');
        } catch (InvalidInputException $error) {
            self::assertSame('invalid_wait', $error->getErrorCode());
        }
    }

    public function testAWebhookIsVerifiedInConstantTimeWithinItsTolerance(): void
    {
        $key = random_bytes(32);
        $secret = 'whsec_' . base64_encode($key);
        $body = '{"type":"session.opened","timestamp":"2025-01-01T00:00:00Z","data":{"seq":1}}';
        $now = 1764112345;
        $sign = static fn (string $id, int $stamp, string $text): string => 'v1,' . base64_encode(hash_hmac('sha256', "{$id}.{$stamp}.{$text}", $key, true));
        $good = ['webhook-id' => 'msg_1', 'webhook-timestamp' => (string) $now, 'webhook-signature' => $sign('msg_1', $now, $body)];
        self::assertSame(['seq' => 1], Webhook::verify($secret, $good, $body, now: $now)['data']);
        $cased = ['Webhook-Id' => 'msg_1', 'Webhook-Timestamp' => (string) $now, 'Webhook-Signature' => 'v1,AAAA ' . $good['webhook-signature']];
        self::assertSame('session.opened', Webhook::verify($secret, $cased, $body, now: $now)['type']);
        self::assertNotEmpty(Webhook::verify($secret, $good, $body, now: $now + 300));
        self::assertNotEmpty(Webhook::verify($secret, $good, $body, now: $now - 300));
        $bad = [
            [$secret, $good, $body . ' ', $now],
            [$secret, ['webhook-id' => 'msg_2'] + $good, $body, $now],
            [$secret, ['webhook-timestamp' => (string) ($now + 1)] + $good, $body, $now],
            [$secret, ['webhook-signature' => 'v2,' . substr($good['webhook-signature'], 3)] + $good, $body, $now],
            [$secret, $good, $body, $now + 301],
            [$secret, $good, $body, $now - 301],
            [$secret, ['webhook-timestamp' => (string) $now, 'webhook-signature' => $good['webhook-signature']], $body, $now],
            ['whsec_' . base64_encode(random_bytes(32)), $good, $body, $now],
            ['not-a-secret', $good, $body, $now],
        ];
        foreach ($bad as $i => [$withSecret, $headers, $text, $at]) {
            try {
                Webhook::verify($withSecret, $headers, $text, now: $at);
                self::fail("case {$i} was taken");
            } catch (WebhookVerificationException) {
                self::addToAssertionCount(1);
            }
        }
        self::assertStringContainsString('hash_equals($expected, $value)', (string) file_get_contents(__DIR__ . '/../src/Webhook.php'));
    }

    public function testTheFamiliesRetryRulesAndSafeOperationsAreTheApiDocuments(): void
    {
        $document = json_decode((string) file_get_contents(__DIR__ . '/../../../openapi.json'), true, 512, JSON_THROW_ON_ERROR);
        $code = $document['components']['schemas']['Error']['properties']['code'];
        $families = ['not_found' => NotFoundException::class, 'invalid_input' => InvalidInputException::class, 'unavailable' => UnavailableException::class];
        foreach ($code['x-family'] as $name => $family) {
            self::assertSame($families[$family], Client::ERROR_FAMILIES[$name], $name);
            self::assertSame($code['x-retry'][$name], Client::RETRY[$name], $name);
        }
        foreach ($document['paths'] as $path => $item) {
            self::assertSame($item['post']['x-retry-safe'], Client::RETRY_SAFE[$path], $path);
            self::assertSame($item['post']['x-retry-safe-with'] ?? null, Client::RETRY_SAFE_WITH[$path] ?? null, $path);
        }
    }

    public function testTheTokenToKeepTravelsInAHeaderNeverInTheUrl(): void
    {
        $behind = new Client((string) getenv('SESSIONS_GATEWAY_URL'), timeout: 5.0);
        $user = self::aUser();
        $kept = $behind->new($user, '192.0.2.9');
        $behind->new($user, '192.0.2.9');
        self::assertSame(1, $behind->deleteUser($user, keep: $kept->token));
        $behind->get($kept->token);
        $requests = self::seen();
        $sent = array_values(array_filter($requests, static fn ($r) => str_starts_with($r['target'], '/sessions/user/del')));
        self::assertSame($kept->token, end($sent)['headers']['X-Session-Token']);
        self::assertSame([], array_filter($requests, static fn ($r) => str_contains($r['target'], $kept->token)));
    }

    public function testAHeaderValueAHeaderCannotHoldIsInvalidInputAndNothingIsSent(): void
    {
        $url = (string) getenv('SESSIONS_GATEWAY_URL');
        $behind = new Client($url, timeout: 5.0);
        $before = count(self::seen());
        foreach (["61494096-9af7-49ba-9fb4-e89c0811e6d3\r\nX-Evil: 1", "a\nb", "nul\0", "\u{e9}"] as $bad) {
            $calls = [
                static fn () => $behind->get($bad),
                static fn () => $behind->delete($bad),
                static fn () => $behind->rotate($bad),
                static fn () => $behind->deleteUser(self::aUser(), keep: $bad),
                static fn () => $behind->new(self::aUser(), '192.0.2.1', idempotencyKey: $bad),
                static fn () => $behind->count($bad, self::aUser()), // not a kind
                static fn () => new Client($url, apiKey: $bad),
            ];
            foreach ($calls as $number => $call) {
                try {
                    $call();
                    self::fail("call {$number} took " . json_encode($bad));
                } catch (InvalidInputException $error) {
                    self::assertSame('bad_request', $error->getErrorCode());
                    self::assertNull($error->getStatus());
                }
            }
        }
        self::assertCount($before, self::seen());
    }

    public function testExtraDataJsonCannotCarryIsInvalidInputAndNothingIsSent(): void
    {
        $behind = new Client((string) getenv('SESSIONS_GATEWAY_URL'), timeout: 5.0);
        $before = count(self::seen());
        foreach ([['n' => INF], ['n' => NAN], ['s' => "\xff not UTF-8"]] as $extra) {
            try {
                $behind->new(self::aUser(), '192.0.2.1', extra: $extra);
                self::fail('extra data JSON cannot carry was taken');
            } catch (InvalidInputException $error) {
                self::assertSame('invalid_extra', $error->getErrorCode());
            }
        }
        self::assertCount($before, self::seen());
    }

    public function testInternalErrorAndCodesOfALaterReleaseFollowTheDocumentedRuleAndAreNotRetried(): void
    {
        $root = (string) getenv('SESSIONS_GATEWAY_ROOT');
        foreach ([[500, 'internal_error', UnavailableException::class], [418, 'a_later_code', InvalidInputException::class], [503, 'a_later_code', UnavailableException::class]] as [$status, $code, $family]) {
            $path = "/canned/{$status}/{$code}/" . self::aUser();
            $retried = [];
            $canned = new Client($root . $path, onRetry: static function (int $attempt) use (&$retried): void {
                $retried[] = $attempt;
            });
            try {
                $canned->get('61494096-9af7-49ba-9fb4-e89c0811e6d3');
                self::fail("{$status} {$code} answered");
            } catch (\Sessions\Client\Exception\SessionsException $error) {
                self::assertInstanceOf($family, $error);
                self::assertSame([$code, $status], [$error->getErrorCode(), $error->getStatus()]);
            }
            self::assertSame([], $retried);
            self::assertCount(1, array_filter(self::seen(), static fn ($r) => str_starts_with($r['target'], $path)));
        }
    }

    public function testADeadlineBoundsAWholeCallAgainstAServiceThatAcceptsAndNeverAnswers(): void
    {
        // Listening, never accepting: the kernel completes the connection, nobody answers.
        $hung = stream_socket_server('tcp://127.0.0.1:0');
        self::assertNotFalse($hung);
        $address = stream_socket_get_name($hung, false);
        $bounded = new Client("http://{$address}", timeout: 0.4, retries: 2, deadline: 0.7);
        $started = hrtime(true);
        try {
            $bounded->get('61494096-9af7-49ba-9fb4-e89c0811e6d3');
            self::fail('a hung service answered');
        } catch (UnavailableException $error) {
            self::assertSame('service_unavailable', $error->getErrorCode());
        }
        // 0.4 s, a wait of 0.1 s, the 0.2 s left; without the deadline: 3 attempts of 0.4 s
        // and 0.1 + 0.2 s of waits, 1.5 s.
        $took = (hrtime(true) - $started) / 1e9;
        self::assertGreaterThan(0.6, $took);
        self::assertLessThan(1.1, $took);
        fclose($hung);
    }

    public function testThePackageIsValidForComposerAndShipsNoTests(): void
    {
        // What `composer validate --strict` asks of a library published from a repository:
        // a license, and no `version` (tags give it).
        $composer = json_decode((string) file_get_contents(__DIR__ . '/../composer.json'), true, 512, JSON_THROW_ON_ERROR);
        self::assertArrayHasKey('license', $composer);
        self::assertArrayNotHasKey('version', $composer);
        // The archive Composer installs into vendor/ (git archive, export-ignore) holds the
        // client, not its tests.
        foreach (['tests', 'phpunit.xml', 'autoload.php', 'src', 'src/Client.php', 'README.md'] as $path) {
            $attribute = trim((string) shell_exec('git -C ' . escapeshellarg(__DIR__ . '/..') . ' check-attr export-ignore -- ' . escapeshellarg($path)));
            $ignored = $path === 'tests' || $path === 'phpunit.xml';
            self::assertStringEndsWith($ignored ? ': set' : ': unspecified', $attribute, $path);
        }
        self::assertSame(['/tests', '/phpunit.xml'], $composer['archive']['exclude'] ?? null);
    }

    /** @return list<array{method: string, target: string, headers: array<string, string>}> */
    private static function seen(): array
    {
        return json_decode((string) file_get_contents(getenv('SESSIONS_GATEWAY_ROOT') . '/seen'), true, 512, JSON_THROW_ON_ERROR);
    }

    public function testASessionRoundTrip(): void
    {
        $user = self::aUser();
        $opened = $this->sessions->new($user, '192.0.2.1', extra: ['device' => 'Nexus 5', 'app' => ['name' => 'mail']], ttl: 3600);
        self::assertSame($user, $opened->userId);
        self::assertEquals(['device' => 'Nexus 5', 'app' => ['name' => 'mail']], $opened->extra); // keys in any order
        $got = $this->sessions->get($opened->token, ip: '192.0.2.7', extra: ['device' => null, 'os' => 'Android']);
        self::assertSame('192.0.2.7', $got->ip);
        self::assertEquals(['app' => ['name' => 'mail'], 'os' => 'Android'], $got->extra); // null removed a key
        $rotated = $this->sessions->rotate($opened->token);
        self::assertNotSame($opened->token, $rotated->token);
        self::assertSame($rotated->token, $this->sessions->delete($rotated->token)->token);
        try {
            $this->sessions->get($rotated->token);
            self::fail('a deleted session was found');
        } catch (NotFoundException $error) {
            self::assertSame('token_not_found', $error->getErrorCode());
            self::assertSame(404, $error->getStatus());
        }
    }

    public function testSessionIdsReadEndAndKeepById(): void
    {
        $withIds = new Client((string) getenv('SESSIONS_URL'), timeout: 5.0, withIds: true);
        $user = self::aUser();
        $kept = $withIds->new($user, '192.0.2.1');
        self::assertMatchesRegularExpression('/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/', (string) $kept->id);
        self::assertNull($this->sessions->get($kept->token)->id);
        $ended = $withIds->new($user, '192.0.2.1');
        self::assertSame($kept->id, $withIds->rotate($kept->token)->id);
        $found = $withIds->byId((string) $ended->id);
        self::assertSame([$ended->id, $ended->activity], [$found->id, $found->activity]);
        self::assertSame($ended->id, $withIds->deleteById((string) $ended->id)->id);
        try {
            $withIds->byId((string) $ended->id);
            self::fail('an ended session is not found');
        } catch (NotFoundException $error) {
            self::assertSame('token_not_found', $error->getErrorCode());
        }
        try {
            $withIds->byId('not-an-id');
            self::fail('a malformed id is bad input');
        } catch (InvalidInputException $error) {
            self::assertSame('bad_request', $error->getErrorCode());
        }
        $withIds->new($user, '192.0.2.1');
        self::assertSame(1, $withIds->deleteUser($user, keepId: $kept->id));
        self::assertSame([$kept->id], array_map(static fn ($s) => $s->id, iterator_to_array($withIds->byUser($user), false)));
    }

    public function testAServiceThatKeepsOnlyHashesOfTokensListsSessionsById(): void
    {
        $hashed = new Client((string) getenv('SESSIONS_HASHED_URL'), timeout: 5.0, withIds: true);
        $user = self::aUser();
        $opened = $hashed->new($user, '192.0.2.1');
        self::assertSame($opened->token, $hashed->get($opened->token)->token);
        $rotated = $hashed->rotate($opened->token);
        self::assertSame($opened->id, $rotated->id);
        $listed = iterator_to_array($hashed->byUser($user), false);
        self::assertCount(1, $listed);
        self::assertInstanceOf(\Sessions\Client\SessionById::class, $listed[0]);
        self::assertSame($opened->id, $listed[0]->id);
        self::assertSame($rotated->token, $hashed->delete($rotated->token)->token);
    }

    public function testAUserIdOf2To63Minus1IsReadBackExactly(): void
    {
        $this->sessions->deleteUser(PHP_INT_MAX);
        $opened = $this->sessions->new(9223372036854775807, '192.0.2.2');
        self::assertSame(PHP_INT_MAX, $opened->userId);
        self::assertSame(PHP_INT_MAX, $this->sessions->get($opened->token)->userId);
        $listed = array_map(static fn ($s) => $s->userId, iterator_to_array($this->sessions->byUser(PHP_INT_MAX), false));
        self::assertSame([PHP_INT_MAX], $listed);
        self::assertSame(1, $this->sessions->deleteUser(PHP_INT_MAX));
    }

    public function testPagingWalksEverySessionOfAUserWithMoreThanAPage(): void
    {
        $user = self::aUser();
        $opened = [];
        for ($i = 0; $i < 7; $i++) {
            $opened[] = $this->sessions->new($user, '192.0.2.3')->token;
        }
        $walked = [];
        foreach ($this->sessions->byUser($user, pageSize: 3) as $session) {
            $walked[] = $session->token;
        }
        self::assertSame(array_reverse($opened), $walked); // newest opened first, each once
        self::assertSame(7, $this->sessions->countUser($user));
        self::assertSame(7, $this->sessions->count('user', $user));
        self::assertSame(6, $this->sessions->deleteUser($user, keep: $opened[0]));
        $ip = sprintf('2001:db8::%x', $user % 65535);
        $this->sessions->get($opened[0], ip: $ip);
        $seen = [];
        foreach ($this->sessions->byIp($ip, pageSize: 1) as $session) {
            $seen[] = $session->token;
        }
        self::assertSame([$opened[0]], $seen);
        self::assertSame(1, $this->sessions->count('ip', $ip));
        self::assertSame(1, $this->sessions->deleteIp($ip));
    }

    public function testReferencesResolveAsRfc3986Says(): void
    {
        // The normal examples of RFC 3986, section 5.4.1, and the service's own Link.
        $base = 'http://a/b/c/d;p?q';
        $examples = [
            'g:h' => 'g:h', 'g' => 'http://a/b/c/g', './g' => 'http://a/b/c/g', 'g/' => 'http://a/b/c/g/',
            '/g' => 'http://a/g', '//g' => 'http://g', '?y' => 'http://a/b/c/d;p?y', 'g?y' => 'http://a/b/c/g?y',
            '#s' => 'http://a/b/c/d;p?q', 'g#s' => 'http://a/b/c/g', ';x' => 'http://a/b/c/;x', '' => 'http://a/b/c/d;p?q',
            '.' => 'http://a/b/c/', './' => 'http://a/b/c/', '..' => 'http://a/b/', '../' => 'http://a/b/',
            '../g' => 'http://a/b/g', '../..' => 'http://a/', '../../' => 'http://a/', '../../g' => 'http://a/g',
        ];
        foreach ($examples as $reference => $expected) {
            self::assertSame($expected, Client::resolve($base, (string) $reference), "'{$reference}'");
        }
        self::assertSame(
            'http://gateway/sessions/user?id=1&after=AAAA',
            Client::resolve('http://gateway/sessions/user?id=1', 'user?id=1&after=AAAA'),
        );
    }

    public function testPagingBehindAGatewayThatServesTheServiceUnderAPathPrefix(): void
    {
        $behind = new Client((string) getenv('SESSIONS_GATEWAY_URL'), timeout: 5.0, retries: 0);
        $user = self::aUser();
        $opened = [];
        for ($i = 0; $i < 5; $i++) {
            $opened[] = $behind->new($user, '192.0.2.8')->token;
        }
        $walked = [];
        foreach ($behind->byUser($user, pageSize: 2) as $session) {
            $walked[] = $session->token;
        }
        self::assertSame(array_reverse($opened), $walked);
        self::assertSame(5, $behind->deleteUser($user));
    }

    public function testEveryErrorFamily(): void
    {
        try {
            $this->sessions->new(self::aUser(), 'not an address');
            self::fail('an invalid address was taken');
        } catch (InvalidInputException $error) {
            self::assertSame('invalid_ip', $error->getErrorCode());
            self::assertSame(400, $error->getStatus());
        }
        $key = 'k-' . self::aUser();
        $user = self::aUser();
        $first = $this->sessions->new($user, '192.0.2.4', idempotencyKey: $key);
        self::assertSame($first->token, $this->sessions->new($user, '192.0.2.4', idempotencyKey: $key)->token);
        try {
            $this->sessions->new($user, '192.0.2.5', idempotencyKey: $key);
            self::fail('a key reused with other parameters was taken');
        } catch (InvalidInputException $error) {
            self::assertSame('idempotency_conflict', $error->getErrorCode());
        }
        $unreachable = new Client('http://127.0.0.1:9', timeout: 1.0, retries: 0);
        try {
            $unreachable->get($first->token);
            self::fail('an unreachable service answered');
        } catch (UnavailableException $error) {
            self::assertSame('service_unavailable', $error->getErrorCode());
        }
    }

    public function testApiKeysGoAsABearerHeader(): void
    {
        $keyed = (string) getenv('SESSIONS_KEYED_URL');
        try {
            (new Client($keyed))->countUser(1);
            self::fail('a keyed service answered without a key');
        } catch (InvalidInputException $error) {
            self::assertSame('unauthorized', $error->getErrorCode());
            self::assertSame(401, $error->getStatus());
        }
        self::assertSame(0, (new Client($keyed, apiKey: (string) getenv('SESSIONS_KEY')))->countUser(self::aUser()));
    }

    public function testA503IsRetriedAfterRetryAfter(): void
    {
        $pid = (int) getenv('SESSIONS_TARANTOOL_PID');
        $opened = $this->sessions->new(self::aUser(), '192.0.2.6');
        $retries = [];
        $patient = new Client((string) getenv('SESSIONS_URL'), timeout: 5.0, onRetry: static function (int $attempt, UnavailableException $error, float $wait) use (&$retries, $pid): void {
            $retries[] = [$attempt, $error->getErrorCode(), $error->getStatus(), $wait];
            posix_kill($pid, 18); // SIGCONT: Tarantool answers again before the retry
        });
        posix_kill($pid, 19); // SIGSTOP
        try {
            self::assertSame($opened->token, $patient->get($opened->token)->token);
        } finally {
            posix_kill($pid, 18);
        }
        self::assertSame([[1, 'storage_unavailable', 503, 1.0]], $retries);
    }
}
