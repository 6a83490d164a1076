<?php
// php alloc.php N: an allocation-heavy PHP workload for scripts/bench, run
// with PHP's own ZendMM (USE_ZEND_ALLOC=1) and with malloc (USE_ZEND_ALLOC=0)
// under each allocator. Rounds of: arrays of strings, objects, json
// round-trips, string building, sorting. Prints one deterministic line.

final class Item {
    public function __construct(
        public int $id,
        public string $name,
        public array $tags,
        public ?Item $parent = null,
    ) {}
}

$n = (int)($argv[1] ?? 20);
$check = 0;
mt_srand(42);

for ($round = 0; $round < $n; $round++) {
    // Arrays of strings of many sizes.
    $words = [];
    for ($i = 0; $i < 20000; $i++) {
        $words[] = str_repeat(chr(97 + $i % 26), 1 + mt_rand(0, 40)) . $i;
    }
    // Objects linking to each other, with small arrays inside.
    $items = [];
    $prev = null;
    foreach ($words as $i => $w) {
        $prev = $items[] = new Item($i, $w, [$w, strtoupper($w), $i % 7], $i % 10 ? $prev : null);
    }
    // json round-trip of a nested structure.
    $doc = [];
    foreach (array_slice($items, 0, 5000) as $it) {
        $doc[$it->name] = ['id' => $it->id, 'tags' => $it->tags, 'parent' => $it->parent?->id];
    }
    $json = json_encode($doc);
    $back = json_decode($json, true);
    $check += count($back) + strlen($json);
    // String building, piece by piece and by implode.
    $s = '';
    foreach ($words as $w) {
        $s .= $w . ',';
    }
    $check += strlen($s) + strlen(implode('|', array_map('strrev', $words)));
    // Sorting and grouping: hash tables growing and being torn down.
    sort($words);
    $groups = [];
    foreach ($words as $w) {
        $groups[$w[0]][] = $w;
    }
    $check += count($groups) + crc32($words[0] . end($words));
    unset($words, $items, $doc, $json, $back, $s, $groups, $prev);
}
echo "php ", $n, " ", $check, "\n";
