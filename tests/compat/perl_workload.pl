#!/usr/bin/perl
# Workload for the perl compatibility test (perl.sh, scripts/compat): hashes
# grown and shrunk, string building and substitution, regexes with captures
# and backtracking, split/join/sort, sprintf, pack/unpack, nested data,
# closures, and a digest of everything printed.
#
#   perl perl_workload.pl [SCALE]     SCALE 1 (default) is a few seconds
#
# Deterministic: its own linear congruential generator, no addresses, hash
# keys always sorted before printing (perl randomizes hash order).
use strict;
use warnings;
use Digest::MD5 qw(md5_hex);
use List::Util qw(sum max min reduce);

my $scale = shift // 1;
my $seed = 12345;
sub rnd { $seed = ($seed * 1103515245 + 12345) % 2147483648; return int($seed / 65536) % $_[0]; }

my @words = qw(zend chunk bin page heap slot run huge request leak arena cache
               free alloc mmap brk perl hash regex string);
my $digest = Digest::MD5->new;
sub say_line { my $l = shift; $digest->add("$l\n"); print "$l\n"; }
sub word { join '-', map { $words[rnd(scalar @words)] } 1 .. $_[0] }

# 1. a hash of strings, grown, appended to and pruned
my %table;
for my $i (0 .. 80000 * $scale - 1) {
  my $k = sprintf 'k%d:%s', $i % 7919, word(1 + $i % 4);
  $table{$k} .= substr($words[$i % @words], 0, 1 + $i % 5);
  delete $table{ sprintf 'k%d:%s', ($i * 31) % 7919, $words[$i % @words] } if $i % 3 == 0;
}
say_line(sprintf 'table: %d keys, %d value chars', scalar keys %table,
         sum(map { length } values %table));
my @sorted = sort keys %table;
say_line("  $_ = " . substr($table{$_}, 0, 40)) for @sorted[0 .. 39];

# 2. strings: repetition, substitution, tr, reverse, index
my $text = join ' ', map { word(1 + $_ % 3) . ":$_" } 0 .. 30000 * $scale - 1;
say_line(sprintf 'text: %d chars, md5 %s', length $text, md5_hex($text));
(my $t2 = $text) =~ s/(\w+)-(\w+)/$2+$1/g;
$t2 =~ tr/a-z/A-Z/;
say_line(sprintf 'swapped: %d chars, md5 %s', length $t2, md5_hex($t2));
my $rev = reverse $text;
say_line(sprintf 'reversed md5 %s, index of "heap-zend" %d', md5_hex($rev), index($text, 'heap-zend'));
my $acc = '';
for my $i (0 .. 50000 * $scale - 1) {
  $acc .= $words[$i % @words] x (1 + $i % 3);
  $acc = substr($acc, 4096) if length $acc > 8192;
}
say_line(sprintf 'accumulator: %d chars, md5 %s', length $acc, md5_hex($acc));

# 3. regexes: captures, alternation, global matches, backtracking
my %hits;
while ($text =~ /\b((?:zend|heap|page)(?:-\w+)*):(\d*7)\b/g) { $hits{$1}++; }
say_line(sprintf 'regex hits: %d distinct, %d total', scalar keys %hits, sum(values %hits));
say_line("  $_ $hits{$_}") for (sort { $hits{$b} <=> $hits{$a} || $a cmp $b } keys %hits)[0 .. 14];
my @lines = map { sprintf '%s=%d;%s', word(2), rnd(100000), word(1) } 1 .. 20000 * $scale;
my ($n, $total) = (0, 0);
for (@lines) {
  if (/^(\w+)-(\w+)=(\d+);(?:.*?)(e+)(.)?$/) { $n++; $total += $3 + length($1 . $4); }
}
say_line("regex lines: $n matched, total $total");
my $csv = join "\n", map { join ',', map { qq("$_") } split /-/, word(4) } 1 .. 5000 * $scale;
my @fields = map { [ map { s/^"|"$//gr } split /,/ ] } split /\n/, $csv;
say_line(sprintf 'csv: %d rows, %d fields, md5 %s', scalar @fields,
         sum(map { scalar @$_ } @fields), md5_hex(join '|', map { @$_ } @fields));

# 4. sort, split/join, nested data, closures
my @nums = map { rnd(30000) * 1000 + rnd(1000) } 1 .. 100000 * $scale;
my @sn = sort { $a <=> $b } @nums;
say_line(sprintf 'numbers: min %d max %d median %d sum %d', $sn[0], $sn[-1], $sn[@sn / 2], sum(@nums));
my %groups;
push @{ $groups{ $_ % 97 } }, $_ for @nums;
my @sizes = map { scalar @{ $groups{$_} } } sort { $a <=> $b } keys %groups;
say_line(sprintf 'groups: %d, largest %d, smallest %d', scalar @sizes, max(@sizes), min(@sizes));
my @tree;
for my $i (0 .. 20000 * $scale - 1) {
  my $node = { id => $i, name => word(2), tags => [ map { $words[($i + $_) % @words] } 0 .. $i % 5 ],
               meta => { depth => $i % 7, parent => $i ? rnd($i) : undef } };
  push @tree, $node;
  splice @tree, rnd(scalar @tree), 1 if $i % 4 == 3;
}
my $tagged = reduce { $a + @{ $b->{tags} } } 0, @tree;
say_line(sprintf 'tree: %d nodes, %d tags, md5 %s', scalar @tree, $tagged,
         md5_hex(join ',', map { "$_->{id}:$_->{name}:@{$_->{tags}}:$_->{meta}{depth}" } @tree));
my @counters = map { my $c = $_; sub { $c += $_[0]; $c } } 1 .. 1000;
my $csum = 0;
for my $r (1 .. 50 * $scale) { $csum += $_->($r) for @counters; }
say_line("closures: $csum");

# 5. pack/unpack, sprintf, join of a big list
my $packed = pack 'N*', @nums[0 .. 9999];
my @back = unpack 'N*', $packed;
say_line(sprintf 'pack: %d bytes, round trip %s', length $packed,
         (join(',', @back) eq join(',', @nums[0 .. 9999]) ? 'ok' : 'MISMATCH'));
my $report = join "\n", map { sprintf '%-12s|%8.3f|%08x|%s', $words[$_ % @words], $_ / 7, $_ * 2654435761 % 4294967296, 'x' x ($_ % 13) } 0 .. 40000 * $scale - 1;
say_line(sprintf 'report: %d chars, md5 %s', length $report, md5_hex($report));

print 'digest ', $digest->hexdigest, "\n";
