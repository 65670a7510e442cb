-- The filter set: every true (lang, s_iri, p_iri, o_iri) that was parsed, not only train, valid
-- and test. A true fact dropped by the length rule is still true and must not count against a
-- model that predicts it. Reads the view `facts` (parsed/<release>/facts).
SELECT DISTINCT lang, s_iri, p_iri, o_iri FROM facts
