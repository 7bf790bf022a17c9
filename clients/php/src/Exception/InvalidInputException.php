<?php

declare(strict_types=1);

namespace Sessions\Client\Exception;

/** The request was wrong; sending it again as it is will not help. */
final class InvalidInputException extends SessionsException
{
}
