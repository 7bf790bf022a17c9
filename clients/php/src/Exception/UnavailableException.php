<?php

declare(strict_types=1);

namespace Sessions\Client\Exception;

/** The service cannot answer now, or did not answer: not the same as "no session". */
final class UnavailableException extends SessionsException
{
}
