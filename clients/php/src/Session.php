<?php

declare(strict_types=1);

namespace Sessions\Client;

/**
 * A session as the service keeps it. `create` and `activity` are Unix seconds; `id`, the
 * session's id (not secret, kept for its life), is there when the client was made with
 * `withIds: true`.
 */
final class Session
{
    /** @param array<string, mixed>|null $extra */
    public function __construct(
        public readonly string $ip,
        public readonly ?array $extra,
        public readonly int $userId,
        public readonly int $create,
        public readonly int $activity,
        public readonly string $token,
        public readonly ?string $id = null,
    ) {
    }

    /** @param array<string, mixed> $data a SessionObject as the service answers it */
    public static function fromArray(array $data): self
    {
        return new self(
            (string) $data['ip'],
            $data['extra'] === null ? null : (array) $data['extra'],
            (int) $data['user_id'],
            (int) $data['create'],
            (int) $data['activity'],
            (string) $data['token'],
            isset($data['id']) ? (string) $data['id'] : null,
        );
    }
}
