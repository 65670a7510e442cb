"""Benchmark: string encoding and nearest-neighbour retrieval speed, and similarity quality on shipped data.

``python -m benchmarks.similarity [--quick] [--prixlm FOLDER]`` measures, in one run:

- encoding throughput (strings/s) of ``mirror.embed`` (length-sorted batches of
  ``similarity.encode_batch``) against one string per forward pass, on real DBP15K French entity
  names, with the configured base (``--quick``: tiny);
- retrieval: top-1 and realistic ranks of Q queries over N keys by blocked matrix products
  (``retrieval.Scorer``), cosine and CSLS, against a per-query numpy loop (``retrieval.naive_top1``)
  on the same vectors (N = DBP15K's English entities, H = the model's hidden size), asserting the
  same answers;
- quality, base + Mirror vs Prix-LM + Mirror (``--prixlm``, default: the release's exported
  Prix-LM (All) when there is one): XEL on DBP15K FR-EN reference links against every English
  entity, BLI on the configured pairs; the Mirror-BERT budget is printed with the table.

Writes ``<data_root>/reports/benchmarks/similarity.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

from benchmarks.decode import dbp15k
from prixlm_model.config import load_settings
from prixlm_model.dbp15k import read_links

CHECK_QUERIES = 200  # queries the naive loop must answer identically


def encode_speed(model, tokenizer, names: list[str], sim, single: int) -> dict:
    """Strings/s of batched, length-sorted encoding vs one string per forward pass."""
    from prixlm_model.mirror import embed

    start = time.perf_counter()
    batched = embed(model, tokenizer, names, sim)
    batched_s = time.perf_counter() - start
    start = time.perf_counter()
    one_by_one = torch.cat([embed(model, tokenizer, [name], sim) for name in names[:single]])
    single_s = time.perf_counter() - start
    agree = float((batched[:single] * one_by_one).sum(1).min())  # padding must not change an embedding
    rates = {"batched": len(names) / batched_s, "single": single / single_s}
    return {"strings": len(names), "single_strings": single, "batched_per_s": round(rates["batched"], 1),
            "single_per_s": round(rates["single"], 1), "speedup": round(rates["batched"] / rates["single"], 2),
            "min_cosine_batched_vs_single": round(agree, 6), "encode_batch": sim.encode_batch}


def retrieval_speed(queries: int, keys: int, hidden: int, sim, device: torch.device) -> dict:
    """Seconds for top-1 and ranks of ``queries`` over ``keys`` (blocked) vs the naive loop."""
    from prixlm_model.retrieval import Scorer, naive_top1, rank_golds

    generator = torch.Generator().manual_seed(0)
    key_vectors = torch.nn.functional.normalize(torch.randn(keys, hidden, generator=generator), dim=1)
    query_vectors = torch.nn.functional.normalize(key_vectors[:queries] + 0.5 * torch.randn(queries, hidden, generator=generator), dim=1)
    golds = [[i] for i in range(queries)]
    timings = {}
    for name, csls in (("cosine", 0), ("csls", sim.csls_k)):
        start = time.perf_counter()
        ranked = rank_golds(Scorer(query_vectors.to(device), key_vectors.to(device), csls_k=csls, block=sim.search_block), golds)
        timings[name] = time.perf_counter() - start
        if name == "cosine":
            top = ranked["top"]
    checked = min(CHECK_QUERIES, queries)
    start = time.perf_counter()
    naive = naive_top1(query_vectors[:checked].numpy(), key_vectors.numpy())
    naive_s = (time.perf_counter() - start) * queries / checked  # extrapolated to every query
    assert (naive == top[:checked]).all(), "blocked and naive top-1 differ"
    return {"queries": queries, "keys": keys, "hidden": hidden, "device": str(device), "blocked_cosine_s": round(timings["cosine"], 3),
            "blocked_csls_s": round(timings["csls"], 3), "naive_loop_s": round(naive_s, 3), "naive_measured_queries": checked,
            "speedup": round(naive_s / timings["cosine"], 1), "top1_identical": f"{checked}/{checked}"}


def quality(settings, models: dict, link_count: int) -> list[dict]:
    """XEL (DBP15K FR->EN, every English entity a candidate) and BLI rows of each model after Mirror-BERT."""

    from jobs.similarity import bli_rows
    from prixlm_model.mirror import Embedder, load_encoder, mirror_tune, read_words
    from prixlm_model.xel import evaluate_links

    sim = settings.similarity
    fr, _, _ = dbp15k(settings, 1)
    en, _, _ = dbp15k(settings, 2)
    links = read_links(settings.sample.dbp15k_dir, ("ref",))[:link_count]
    queries = [(str(f), fr[f], str(e), en[e]) for f, e in links]
    entities = [(str(e), name) for e, name in en.items()]
    rows = []
    for label, folder in models.items():
        model, tokenizer = load_encoder(folder, sim)
        budget = mirror_tune(model, tokenizer, read_words(sim.mirror_words, sim.mirror_max_words), sim).summary()
        embed = Embedder(model, tokenizer, sim)
        xel = evaluate_links(embed, queries, entities, sim.search_block)["metrics"]
        rows.append({"task": "xel dbp15k fr-en", "model": label, "hits@1": xel["hits@1"], "mrr": xel["mrr"], "queries": xel["queries"], "candidates": xel["candidates"], "mirror": budget})
        rows += [{"task": f"bli {row['pair']} {row['variant']}", "model": label, "hits@1": row["p@1"], "mrr": row["mrr"], "queries": row["queries"], "mirror": budget}
                 for row in bli_rows(embed, label, settings)]
        print(f"{label}: Mirror-BERT {budget}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    from jobs.reports import pivot
    from jobs.similarity import BASE, PRIXLM, compared_models
    from prixlm_model.base_model import ensure_base_model
    from prixlm_model.mirror import load_encoder, resolve_device

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, 512 names, 500 queries, 100 links, one BLI pair, 2 Mirror steps")
    parser.add_argument("--prixlm", help="a Prix-LM model folder (default: the release's exported Prix-LM (All), if any)")
    parser.add_argument("--release", default="latest", help="release whose exported Prix-LM is compared when --prixlm is not given")
    args = parser.parse_args(argv)
    quick = {"model": {"base": "tiny"}, "similarity": {"mirror_max_steps": 2, "mirror_max_words": 256, "bli_pairs": ["en-it"], "bli_train": "500"}}
    settings = load_settings(quick if args.quick else None)
    sim = settings.similarity
    started = time.perf_counter()
    names = list(dbp15k(settings, 1)[0].values())
    model, tokenizer = load_encoder(ensure_base_model(settings), sim)
    encode = encode_speed(model, tokenizer, names[: 512 if args.quick else 4096], sim, 32 if args.quick else 128)
    print(f"encoding: {encode['batched_per_s']:.0f} strings/s batched vs {encode['single_per_s']:.0f} one at a time: {encode['speedup']:.1f}x", flush=True)
    retrieval = retrieval_speed(500 if args.quick else 2000, len(dbp15k(settings, 2)[0]), model.config.hidden_size, sim, resolve_device(sim.device))
    print(f"retrieval {retrieval['queries']} x {retrieval['keys']}: blocked {retrieval['blocked_cosine_s']:.3f} s (CSLS {retrieval['blocked_csls_s']:.3f} s) "
          f"vs naive per-query loop {retrieval['naive_loop_s']:.2f} s: {retrieval['speedup']:.0f}x", flush=True)
    del model
    models = {BASE: ensure_base_model(settings)}
    if args.prixlm:
        models[PRIXLM] = args.prixlm
    elif not args.quick and settings.paths.stage_root("split").is_dir():  # a pipeline has run here: compare its Prix-LM
        from jobs.stage import resolve_release

        models = compared_models(settings, resolve_release(settings, args.release, "split"))
    rows = quality(settings, models, 100 if args.quick else 1000)
    print(pivot(rows, "model", ("task",), "hits@1", "mrr"))
    report = {"benchmark": "similarity", "quick": args.quick,
              "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "processor": platform.processor() or platform.machine(), "device": str(resolve_device(sim.device))},
              "encode": encode, "retrieval": retrieval, "quality": rows, "models": {k: str(v) for k, v in models.items()},
              "budget": sim.model_dump(mode="json", include={"mirror_max_words", "mirror_epochs", "mirror_max_steps", "mirror_batch", "bli_pairs", "bli_train"}),
              "seconds": round(time.perf_counter() - started, 1)}
    out = settings.paths.benchmark_report("similarity")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
