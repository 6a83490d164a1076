<?php
// Exercises the shared extensions Debian's php.ini loads (tokenizer, phar,
// PDO, fileinfo, calendar, iconv, sodium, zlib, ctype, posix): loaded with
// RTLD_DEEPBIND, they are where another preloaded malloc breaks PHP.
// Run by php.sh without -n, in an empty working directory, with
// -d phar.readonly=0. Deterministic output.
$src = file_get_contents(__DIR__ . '/php_workload.php');
$tokens = token_get_all($src);
$kinds = [];
foreach ($tokens as $t) {
    $name = is_array($t) ? token_name($t[0]) : 'char ' . $t;
    $kinds[$name] = ($kinds[$name] ?? 0) + 1;
}
ksort($kinds);
echo 'tokens: ', count($tokens), "\n";
foreach ($kinds as $k => $n) printf("  %-28s %5d\n", $k, $n);
$php = PhpToken::tokenize($src);
echo 'PhpToken: ', count($php), ' ', md5(implode('', array_map(fn($t) => $t->text, $php))), "\n";

$phar = new Phar(getcwd() . '/t.phar');
$phar->startBuffering();
for ($i = 0; $i < 200; $i++) {
    $phar->addFromString("dir" . ($i % 7) . "/f$i.txt", str_repeat("phar $i\n", 1 + $i % 50));
}
$phar->setStub('<?php __HALT_COMPILER();');
$phar->stopBuffering();
unset($phar);
$sum = 0;
$n = 0;
foreach (new RecursiveIteratorIterator(new Phar(getcwd() . '/t.phar')) as $f) {
    $sum += strlen(file_get_contents($f->getPathname()));
    $n++;
}
echo "phar: $n files, $sum bytes\n";

echo 'pdo drivers: ', json_encode(PDO::getAvailableDrivers()), "\n";
$fi = new finfo(FILEINFO_MIME_TYPE);
echo 'finfo: ', $fi->buffer("<?php echo 1;\n"), ' ', $fi->buffer("GIF89a" . str_repeat("\0", 32)), "\n";
echo 'calendar: ', cal_days_in_month(CAL_GREGORIAN, 2, 2024), ' ', jdtogregorian(2460000), "\n";
echo 'iconv: ', bin2hex(iconv('UTF-8', 'UTF-16LE', str_repeat('zmm-é', 3))), "\n";
echo 'sodium: ', bin2hex(sodium_crypto_generichash(str_repeat('zend', 1000))), "\n";
$z = gzcompress(str_repeat(implode(',', range(1, 500)), 20), 9);
echo 'zlib: ', strlen($z), ' ', md5(gzuncompress($z)), "\n";
echo 'ctype: ', var_export(ctype_alnum('abc123') && !ctype_digit('12a'), true), "\n";
echo 'posix: ', var_export(posix_getpid() === getmypid(), true), "\n";
