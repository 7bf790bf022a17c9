<?php

declare(strict_types=1);

namespace Sessions\Client\Exception;

/** The session is not there (signed out, expired, never was): ask the user to sign in. */
final class NotFoundException extends SessionsException
{
}
