"""predict: the ranked objects of one ``(subject, relation, ?)`` query from the release's trained model.

Run ``python -m jobs.predict --lang fr --subject "Paris" --relation "pays"``; the subject and the
relation are names in that language or IRIs. Objects come from the same constrained beam search
as the construct stage, over the language's entities; probabilities use the calibration that
``jobs.construct`` fitted for the release (without it, only log-probabilities are shown). Objects
the KB already holds for the pair are listed too, marked ``known``. An unknown subject or
relation is refused with the closest known names.
"""

from __future__ import annotations

import difflib
import json
import logging
import sys
from collections.abc import Mapping

from jobs.construct import checked_model, read_table
from jobs.evaluate import ALL, default_models, model_folder
from jobs.stage import is_complete, require_complete, stage_parser, stage_start
from prixlm_model.config import Settings

CLOSEST = 5  # close names suggested for an unknown one


class UnknownName(ValueError):
    """A subject or relation the language's KB does not have; the message lists the closest names."""


def resolve(value: str, names: Mapping[str, str], what: str, lang: str) -> tuple[str, str]:
    """``(iri, name)`` for an IRI or a name among ``names`` (IRI -> name). A name shared by several
    IRIs resolves to the first IRI in sorted order, which the caller prints."""
    if value in names:
        return value, names[value]
    matches = sorted(iri for iri, name in names.items() if name == value)
    if matches:
        return matches[0], value
    close = difflib.get_close_matches(value, sorted(set(names.values())), n=CLOSEST, cutoff=0.5)
    hint = f"; closest known: {', '.join(repr(name) for name in close)}" if close else ""
    raise UnknownName(f"unknown {what} {value!r} in the {lang} KB{hint}")


def predict(settings: Settings, release: str, lang: str, subject: str, relation: str, top: int) -> list[dict]:
    """The ``top`` objects for the query, best first: ``rank, o_iri, o, logprob, probability, known``."""
    from prixlm_model.calibration import Calibrator
    from prixlm_model.construct import Decoding, LanguageKB, Query, propose
    from prixlm_model.decoding import load_decoder
    from prixlm_model.evaluation import build_candidates

    parsed = require_complete(settings.paths.stage_dir("parsed", release), "parse")
    split = require_complete(settings.paths.stage_dir("split", release), "split")
    kb = LanguageKB(lang, read_table(parsed / "facts", lang))
    s_iri, s = resolve(subject, kb.names, "subject", lang)
    p_iri, p = resolve(relation, kb.relation_names, "relation", lang)
    folder, _ = checked_model(model_folder(default_models(settings, release), ALL, lang), release)
    entities = read_table(split / "entities", lang)
    model, tokenizer = load_decoder(folder, settings.model.seed)
    decoding = Decoding(model, tokenizer, build_candidates(tokenizer, entities), settings.construct.beam_size, top,
                        settings.eval.queries_per_batch, settings.eval.head_rows, settings.eval.precision)
    proposals = propose(decoding, [Query(s_iri, p_iri, s, p)], {})
    predictions = settings.paths.stage_dir("predictions", release)
    calibrations = json.loads((predictions / "calibration.json").read_text()) if is_complete(predictions) else {}
    calibrator = Calibrator.from_dict(calibrations[lang]) if lang in calibrations else None
    names = dict(zip(entities.column("iri").to_pylist(), entities.column("name").to_pylist()))
    known = kb.objects.get((s_iri, p_iri), set())
    return [{"rank": proposal.rank, "o_iri": proposal.o_iri, "o": names.get(proposal.o_iri, ""), "logprob": proposal.logprob,
             "probability": float(calibrator([proposal.logprob])[0]) if calibrator else None, "known": proposal.o_iri in known}
            for proposal in proposals]


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--lang", required=True, help="the KB's language, e.g. fr")
    parser.add_argument("--subject", required=True, help="a subject name in that language, or its IRI")
    parser.add_argument("--relation", required=True, help="a relation name in that language, or its IRI")
    parser.add_argument("--top", type=int, default=10, help="objects listed (default 10)")
    args = parser.parse_args(argv)
    settings, release = stage_start(args, level=logging.WARNING)
    try:
        ranked = predict(settings, release, args.lang, args.subject, args.relation, args.top)
    except UnknownName as error:
        sys.exit(str(error))
    if not ranked:
        print("no object: the search completed no entity name")
    for row in ranked:
        probability = f"{row['probability']:.3f}" if row["probability"] is not None else "n/a (run jobs.construct to calibrate)"
        print(f"{row['rank']:>3}  p={probability}  logprob={row['logprob']:.3f}  {row['o']}  <{row['o_iri']}>" + ("  (known)" if row["known"] else ""))


if __name__ == "__main__":
    main()
