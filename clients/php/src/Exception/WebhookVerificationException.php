<?php

declare(strict_types=1);

namespace Sessions\Client\Exception;

/** A webhook that is not the service's (or too old): Webhook::verify's error. */
final class WebhookVerificationException extends \UnexpectedValueException
{
}
