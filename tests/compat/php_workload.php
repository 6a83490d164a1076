<?php
// Workload for the php compatibility test: arrays of strings, str_repeat,
// implode/explode, json_encode/json_decode, sorting, and an md5 of everything
// printed. Deterministic: mt_srand with a fixed seed (MT_RAND_MT19937).
mt_srand(20240601);
$words = ['zend', 'chunk', 'bin', 'page', 'heap', 'slot', 'run', 'huge',
          'request', 'leak', 'arena', 'cache', 'free', 'alloc', 'mmap', 'brk'];
$out = [];
function say(array &$out, string $line): void { $out[] = $line; echo $line, "\n"; }

// 1. an array of strings, grown, sorted, deduplicated
$list = [];
for ($i = 0; $i < 60000; $i++) {
    $w = $words[mt_rand(0, count($words) - 1)];
    $list[] = $w . '-' . str_repeat(chr(97 + $i % 26), 1 + $i % 11) . '-' . ($i * 7919 % 10007);
}
sort($list, SORT_STRING);
say($out, sprintf('list: %d, first %s, last %s', count($list), $list[0], $list[count($list) - 1]));
$uniq = array_values(array_unique($list));
say($out, sprintf('unique: %d', count($uniq)));
usort($uniq, fn($a, $b) => [strlen($a), $a] <=> [strlen($b), $b]);
for ($i = 0; $i < 40; $i++) say($out, '  ' . $uniq[$i * 997 % count($uniq)]);

// 2. implode / explode / str_replace / substr churn
$big = implode('|', $list);
say($out, sprintf('big: %d bytes, md5 %s', strlen($big), md5($big)));
$parts = explode('|', str_replace(['zend', 'heap', '-'], ['ZEND', 'h', '_'], $big));
say($out, sprintf('parts: %d, sha1 %s', count($parts), sha1(implode("\n", $parts))));
$counts = array_count_values(array_map(fn($p) => explode('_', $p)[0], $parts));
ksort($counts);
foreach ($counts as $k => $v) say($out, sprintf('  %-8s %5d', $k, $v));
$s = '';
for ($i = 0; $i < 20000; $i++) {
    $s .= str_repeat($words[$i % 16], 1 + $i % 5);
    if (strlen($s) > 50000) $s = substr($s, 25000);
}
say($out, sprintf('churn: %d bytes, md5 %s', strlen($s), md5($s)));

// 3. nested arrays and a json round trip
$doc = [];
foreach ($list as $i => $item) {
    [$head] = explode('-', $item, 2);
    $doc[$head][] = ['item' => $item, 'n' => $i, 'tags' => [substr($item, 0, 3), $i % 97],
                     'pad' => str_repeat('x', $i % 40)];
}
ksort($doc);
$json = json_encode($doc, JSON_PRETTY_PRINT);
$back = json_decode($json, true);
say($out, sprintf('json: %d bytes, md5 %s, round trip %s', strlen($json), md5($json),
                  $back === $doc ? 'equal' : 'DIFFERENT'));
foreach ($back as $k => $rows) {
    $ns = array_column($rows, 'n');
    say($out, sprintf('  %-8s rows %5d sum %10d max %6d', $k, count($rows), array_sum($ns), max($ns)));
}
unset($doc, $back, $json);

// 4. associative arrays grown and shrunk, sorted by value
$assoc = [];
for ($i = 0; $i < 50000; $i++) {
    $assoc['k' . ($i * 31 % 20011)] = str_repeat($words[$i % 16], 1 + $i % 3) . $i;
    if ($i % 3 == 0) unset($assoc['k' . ($i * 17 % 20011)]);
}
asort($assoc, SORT_STRING);
say($out, sprintf('assoc: %d, first %s => %s', count($assoc), array_key_first($assoc), reset($assoc)));
arsort($assoc);
say($out, sprintf('assoc desc: first %s => %s', array_key_first($assoc), reset($assoc)));
$chunks = array_chunk($assoc, 1000, true);
foreach ($chunks as $i => $c) {
    if ($i % 2 == 0) say($out, sprintf('  chunk %2d: %d, md5 %s', $i, count($c), md5(serialize($c))));
}

// 5. preg and sprintf
$m = preg_match_all('/(h[a-z]+)_([a-z]+)_(\d+)/', implode(' ', array_slice($parts, 0, 5000)), $mm);
say($out, sprintf('preg: %d matches, %s', $m, md5(implode(',', $mm[3]))));
for ($i = 0; $i < 100; $i++) {
    say($out, sprintf('line %3d %08x %-12s %s', $i, mt_rand(), $words[mt_rand(0, 15)], str_repeat('=', $i % 13)));
}
echo 'md5 of all lines: ', md5(implode("\n", $out)), "\n";
