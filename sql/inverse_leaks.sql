-- Inverse leaks (paper §3.2): a held-out (e1, r1, e2) becomes 'leak' when some (e2, r2, e1) of
-- its language is in train, since the model would read the answer off the inverse fact.
-- Reads the view `assigned` (triples with `split`, from split_triples); same columns out.
WITH inverse_in_train AS (
  SELECT DISTINCT lang, o_iri AS s_iri, s_iri AS o_iri FROM assigned WHERE split = 'train'
)
SELECT a.* EXCEPT (split),
       CASE WHEN a.split IN ('test', 'valid') AND i.lang IS NOT NULL THEN 'leak' ELSE a.split END AS split
FROM assigned a
LEFT JOIN inverse_in_train i ON a.lang = i.lang AND a.s_iri = i.s_iri AND a.o_iri = i.o_iri
