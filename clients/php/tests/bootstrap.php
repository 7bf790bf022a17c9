<?php

declare(strict_types=1);

// The tests run with Debian's phpunit alone, without `composer install`.
require __DIR__ . '/../autoload.php';
