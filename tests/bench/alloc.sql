-- sqlite3 :memory: '.parameter set @n ROWS' '.read alloc.sql'
-- An allocation-heavy SQLite workload for scripts/bench: an in-memory
-- database (every page is a malloc'd block), bulk inserts of generated text,
-- an index built afterwards, then aggregate, join and sort queries.
-- Deterministic: rows come from a counter, not random(). Prints one line.
PRAGMA cache_size = -65536;
CREATE TABLE t (id INTEGER PRIMARY KEY, k INTEGER, name TEXT, body TEXT);
WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < @n)
INSERT INTO t (k, name, body)
SELECT (i * 7919) % 1000, printf('name-%08d', (i * 104729) % @n), hex(zeroblob(20 + i % 200)) FROM c;
CREATE INDEX t_name ON t (name);
CREATE INDEX t_k ON t (k, name);
CREATE TABLE u AS SELECT k, count(*) AS n, sum(length(body)) AS bytes FROM t GROUP BY k;
UPDATE t SET body = body || name WHERE k % 3 = 0;
DELETE FROM t WHERE k % 5 = 0;
SELECT 'sqlite', @n,
  (SELECT count(*) FROM t),
  (SELECT sum(length(body)) FROM t),
  (SELECT sum(u.n * t.k) FROM t JOIN u USING (k) WHERE t.name LIKE 'name-0001%'),
  (SELECT length(group_concat(name, '')) FROM (SELECT name FROM t ORDER BY body DESC, name LIMIT 50)),
  (SELECT count(DISTINCT substr(name, 1, 9)) FROM t);
