<?php

declare(strict_types=1);

// For use without Composer: what Composer's autoloader does for this package (composer.json,
// PSR-4 `Sessions\Client\` in src/). With Composer, require vendor/autoload.php instead.
spl_autoload_register(static function (string $class): void {
    $prefix = 'Sessions\\Client\\';
    if (str_starts_with($class, $prefix)) {
        $path = __DIR__ . '/src/' . str_replace('\\', '/', substr($class, strlen($prefix))) . '.php';
        if (is_file($path)) {
            require $path;
        }
    }
});
