<?php

declare(strict_types=1);

namespace Sessions\Client;

/** A session found by its id (`byId`, `deleteById`): its id, never its token. */
final class SessionById
{
    /** @param array<string, mixed>|null $extra */
    public function __construct(
        public readonly string $ip,
        public readonly ?array $extra,
        public readonly int $userId,
        public readonly int $create,
        public readonly int $activity,
        public readonly string $id,
    ) {
    }

    /** @param array<string, mixed> $data a SessionObject as `/session` answers it */
    public static function fromArray(array $data): self
    {
        return new self(
            (string) $data['ip'],
            $data['extra'] === null ? null : (array) $data['extra'],
            (int) $data['user_id'],
            (int) $data['create'],
            (int) $data['activity'],
            (string) $data['id'],
        );
    }
}
