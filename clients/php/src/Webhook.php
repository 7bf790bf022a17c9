<?php

declare(strict_types=1);

namespace Sessions\Client;

use Sessions\Client\Exception\WebhookVerificationException;

/**
 * Checking a webhook the sessions service sent, as the Standard Webhooks convention says: the
 * `v1,` HMAC-SHA256 signature over `{webhook-id}.{webhook-timestamp}.{body}` with the `whsec_`
 * secret, compared in constant time (hash_equals), and a timestamp close to now.
 */
final class Webhook
{
    /** Seconds a webhook's timestamp may be from this clock, either way (older may be replays). */
    public const TOLERANCE = 300;

    /**
     * The message (`type`, `timestamp`, `data`: the event) of a webhook whose signature and
     * timestamp check out; WebhookVerificationException otherwise. $headers as received (names
     * in any case; `getallheaders()` will do), $body the raw body (`file_get_contents('php://input')`).
     *
     * @param array<string, string|list<string>> $headers
     * @return array<string, mixed>
     */
    public static function verify(string $secret, array $headers, string $body, int $tolerance = self::TOLERANCE, ?int $now = null): array
    {
        $lowered = [];
        foreach ($headers as $name => $value) {
            $lowered[strtolower((string) $name)] = is_array($value) ? implode(' ', $value) : $value;
        }
        $id = $lowered['webhook-id'] ?? null;
        $stamp = $lowered['webhook-timestamp'] ?? null;
        $signatures = $lowered['webhook-signature'] ?? null;
        if ($id === null || $stamp === null || $signatures === null) {
            throw new WebhookVerificationException('a webhook-id, webhook-timestamp or webhook-signature header is missing');
        }
        if (preg_match('/^[0-9]+$/D', $stamp) !== 1) {
            throw new WebhookVerificationException('webhook-timestamp is not Unix seconds');
        }
        if (abs(($now ?? time()) - (int) $stamp) > $tolerance) {
            throw new WebhookVerificationException('webhook-timestamp is too far from now');
        }
        $key = str_starts_with($secret, 'whsec_') ? base64_decode(substr($secret, 6), true) : false;
        if ($key === false) {
            throw new WebhookVerificationException('the secret must be whsec_ and base64');
        }
        $expected = base64_encode(hash_hmac('sha256', "{$id}.{$stamp}.{$body}", $key, true));
        foreach (explode(' ', $signatures) as $given) {
            [$version, $value] = array_pad(explode(',', $given, 2), 2, '');
            if ($version === 'v1' && hash_equals($expected, $value)) {
                $message = json_decode($body, true, 512, JSON_THROW_ON_ERROR);
                if (!is_array($message)) {
                    throw new WebhookVerificationException('the body is not a webhook message');
                }
                return $message;
            }
        }
        throw new WebhookVerificationException('no signature matches');
    }
}
