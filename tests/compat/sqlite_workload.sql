-- Workload for the sqlite3 compatibility test (run by sqlite.sh against an
-- on-disk database). Deterministic: no random(), no time functions.
.bail on
.headers on
.mode list
PRAGMA journal_mode = WAL;
PRAGMA cache_size = -8000;

CREATE TABLE item (
  id     INTEGER PRIMARY KEY,
  name   TEXT NOT NULL,
  cat    TEXT NOT NULL,
  price  INTEGER NOT NULL,
  note   TEXT
);

WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
INSERT INTO item (id, name, cat, price, note)
SELECT i,
       'item-' || printf('%05d', (i * 7919) % 20000) || '-' ||
         substr('zendchunkbinpageheapslotrunhuge', 1 + (i % 24), 3 + (i % 7)),
       'cat' || (i % 37),
       (i * 2654435761) % 100000,
       CASE WHEN i % 5 = 0 THEN NULL ELSE hex(zeroblob(i % 60)) || replace(printf('%.*c', i % 40, 'x'), 'x', 'ab') END
FROM n;

CREATE INDEX item_cat_price ON item (cat, price);
CREATE INDEX item_name ON item (name);

SELECT count(*) AS n, sum(price) AS total, count(note) AS notes, sum(length(note)) AS note_chars FROM item;

SELECT cat, count(*) AS n, min(price) AS lo, max(price) AS hi, avg(price) AS mean
FROM item GROUP BY cat ORDER BY cat;

SELECT id, name, price FROM item WHERE name LIKE 'item-000%heap%' ORDER BY name, id LIMIT 40;

SELECT substr(name, 12) AS tail, count(*) AS n, group_concat(id % 100, ',') AS ids
FROM (SELECT * FROM item ORDER BY id) GROUP BY tail HAVING n > 100 ORDER BY n DESC, tail;

CREATE TABLE sale (item_id INTEGER REFERENCES item(id), qty INTEGER, day TEXT);
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 30000)
INSERT INTO sale SELECT 1 + (i * 104729) % 20000, 1 + i % 9, '2024-' || printf('%02d', 1 + i % 12) || '-01' FROM n;
CREATE INDEX sale_item ON sale (item_id);

SELECT i.cat, s.day, sum(s.qty) AS qty, sum(s.qty * i.price) AS revenue
FROM sale s JOIN item i ON i.id = s.item_id
WHERE i.cat IN ('cat1', 'cat2', 'cat3')
GROUP BY i.cat, s.day ORDER BY i.cat, s.day;

SELECT name, price, rank() OVER (PARTITION BY cat ORDER BY price DESC, id) AS r
FROM item WHERE cat = 'cat5' ORDER BY r LIMIT 25;

UPDATE item SET note = upper(coalesce(note, 'none')) || '/' || cat WHERE price % 3 = 0;
DELETE FROM item WHERE id % 11 = 0;
SELECT count(*), sum(length(note)), sum(price) FROM item;

SELECT cat, group_concat(name, ';') AS names FROM
  (SELECT cat, name FROM item WHERE price < 500 ORDER BY cat, name) GROUP BY cat ORDER BY cat;

CREATE TEMP TABLE words AS
WITH RECURSIVE split(word, rest) AS (
  SELECT '', (SELECT group_concat(name, ' ') FROM (SELECT name FROM item WHERE id < 400 ORDER BY id)) || ' '
  UNION ALL
  SELECT substr(rest, 1, instr(rest, ' ') - 1), substr(rest, instr(rest, ' ') + 1) FROM split WHERE rest <> ''
) SELECT word FROM split WHERE word <> '';
SELECT count(*), count(DISTINCT word), max(length(word)) FROM words;

PRAGMA integrity_check;
VACUUM;
PRAGMA integrity_check;
SELECT count(*) FROM item INDEXED BY item_cat_price WHERE cat > 'cat2' AND price BETWEEN 1000 AND 50000;
