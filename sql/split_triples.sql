-- The link-prediction split of the triples (paper §3.2): one deterministic coin per triple.
-- Reads the view `triples` (sequences of kind 'triple'); adds `split`: test, valid or train.
-- Parameters:
--   :seed, :release   fix the coin, so a re-run of a release gives the same split;
--   :eval_languages   the languages held out from (the others only train);
--   :test_share       the share of an evaluated language's triples for test;
--   :valid_upper      test_share + valid_share * (1 - test_share): valid takes its share of the rest.
SELECT * EXCEPT (coin),
       CASE WHEN array_contains(:eval_languages, lang) AND coin < :test_share THEN 'test'
            WHEN array_contains(:eval_languages, lang) AND coin < :valid_upper THEN 'valid'
            ELSE 'train' END AS split
FROM (SELECT *, pmod(xxhash64(:seed, :release, s_iri, p_iri, o_iri), 1000000) / 1000000 AS coin FROM triples)
