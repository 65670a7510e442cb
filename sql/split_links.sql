-- The entity-linking hold-out: one coin per unordered link pair, so that both directions of a
-- cross-lingual link go to the same side. Reads the view `links` (sequences of kind 'link');
-- adds `split`: test or train. Parameters: :seed, :release, :test_share.
SELECT *,
       CASE WHEN pmod(xxhash64(:seed, :release, least(s_iri, o_iri), greatest(s_iri, o_iri)), 1000000) / 1000000 < :test_share
            THEN 'test' ELSE 'train' END AS split
FROM links
