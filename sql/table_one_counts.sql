-- The counts behind the paper's Table 1, one row per (lang, what): 'train', 'valid', 'test' and
-- 'leak' triples (from the view `split_triples`), 'links' (the view `split_links`) and
-- 'entities' (the view `candidates`).
SELECT lang, split AS what, count(*) AS n FROM split_triples GROUP BY lang, split
UNION ALL
SELECT lang, 'links' AS what, count(*) AS n FROM split_links GROUP BY lang
UNION ALL
SELECT lang, 'entities' AS what, count(*) AS n FROM candidates GROUP BY lang
