-- The candidate objects of each language: every entity of its facts, subject or object, with one
-- surface name (the smallest, so that the choice is stable). Reads the view `facts`.
SELECT lang, iri, min(name) AS name
FROM (SELECT lang, s_iri AS iri, s AS name FROM facts
      UNION ALL
      SELECT lang, o_iri AS iri, o AS name FROM facts)
GROUP BY lang, iri
