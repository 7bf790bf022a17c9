<?php

declare(strict_types=1);

namespace Sessions\Client;

/** A session as the service keeps it. `create` and `activity` are Unix seconds. */
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
        );
    }
}
