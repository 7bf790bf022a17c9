<?php

declare(strict_types=1);

namespace Sessions\Client\Exception;

/**
 * An error answer of the service, or no answer at all: `code` is the API's error code
 * (`getErrorCode()`), `status` the HTTP status, `retryAfter` the seconds the service asked
 * to wait. Caught by family: NotFoundException, InvalidInputException, UnavailableException.
 */
abstract class SessionsException extends \RuntimeException
{
    public function __construct(
        private readonly string $errorCode,
        string $message,
        private readonly ?int $status = null,
        private readonly ?float $retryAfter = null,
        ?\Throwable $previous = null,
    ) {
        parent::__construct($message !== '' ? $message : $errorCode, 0, $previous);
    }

    public function getErrorCode(): string
    {
        return $this->errorCode;
    }

    public function getStatus(): ?int
    {
        return $this->status;
    }

    public function getRetryAfter(): ?float
    {
        return $this->retryAfter;
    }
}
