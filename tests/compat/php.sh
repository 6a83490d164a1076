#!/usr/bin/env bash
# compat test: Debian's PHP 8.2 CLI, plain and under the preload; stdout and
# exit status must match.
#   php-n           USE_ZEND_ALLOC=0 php -n: every PHP allocation goes to malloc,
#                   so to zmm (no php.ini, no shared extensions);
#   php-ini         the same with Debian's php.ini, which loads pdo, phar,
#                   tokenizer and the rest with RTLD_DEEPBIND: the case that
#                   crashes other preloaded allocators (ZENDMM.md, section 2);
#   php-ini-zendmm  php.ini and PHP's own ZendMM on top of zmm.
# The php.ini runs also exercise the extensions (php_extensions.php).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "$0")/lib.sh"

compat_require php php-cli
work=$COMPAT_DIR/php_workload.php
ext=$COMPAT_DIR/php_extensions.php

php_n() {
  USE_ZEND_ALLOC=0 php -n "$work"
  USE_ZEND_ALLOC=0 php -n -r 'echo md5(implode(",", array_map("strrev", explode(" ", str_repeat("zend mm ", 100000))))), "\n";'
}
php_ini() {
  USE_ZEND_ALLOC=0 php "$work"
  USE_ZEND_ALLOC=0 php -d phar.readonly=0 "$ext"
  USE_ZEND_ALLOC=0 php -r 'echo "ok\n";'
}
php_ini_zendmm() {
  php "$work"
  php -d phar.readonly=0 "$ext"
}

compat_compare php-n php_n
compat_compare php-ini php_ini
compat_compare php-ini-zendmm php_ini_zendmm
compat_finish
