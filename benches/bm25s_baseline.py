#!/usr/bin/env python3
"""bm25s (PyPI) on a BEIR set: one query per call, tokenizing included, single process.

Prints one JSON object: queries, qps, p50_ms, p99_ms, ndcg_at_10. Used by benches/run.sh to put
Docent's BM25 Search throughput next to it on the same corpus and queries.
"""
import json
import math
import sys
import time

import bm25s
import Stemmer


def main() -> None:
    data = sys.argv[1]
    split = sys.argv[2] if len(sys.argv) > 2 else "train"
    corpus = [json.loads(line) for line in open(f"{data}/corpus.jsonl")]
    qrels: dict[str, dict[str, int]] = {}
    with open(f"{data}/qrels/{split}.tsv") as f:
        next(f)
        for line in f:
            q, d, s = line.rstrip("\n").split("\t")
            if int(s) > 0:
                qrels.setdefault(q, {})[d] = int(s)
    queries = [json.loads(line) for line in open(f"{data}/queries.jsonl")]
    queries = [q for q in queries if q["_id"] in qrels]

    stemmer = Stemmer.Stemmer("english")
    ids = [d["_id"] for d in corpus]
    texts = [(d.get("title") or "") + " " + d["text"] for d in corpus]
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False), show_progress=False)

    times = []
    ndcg = 0.0
    t0 = time.perf_counter()
    for q in queries:
        t = time.perf_counter()
        tokens = bm25s.tokenize([q["text"]], stopwords="en", stemmer=stemmer, show_progress=False)
        docs, _ = retriever.retrieve(tokens, k=10, show_progress=False)
        times.append(time.perf_counter() - t)
        rels = qrels[q["_id"]]
        dcg = sum(rels.get(ids[d], 0) / math.log2(i + 2) for i, d in enumerate(docs[0]))
        ideal = sorted(rels.values(), reverse=True)[:10]
        idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
        ndcg += dcg / idcg if idcg else 0.0
    total = time.perf_counter() - t0
    times.sort()
    print(json.dumps({
        "queries": len(queries),
        "qps": len(queries) / total,
        "p50_ms": times[len(times) // 2] * 1000,
        "p99_ms": times[int((len(times) - 1) * 0.99)] * 1000,
        "ndcg_at_10": ndcg / len(queries),
    }))


if __name__ == "__main__":
    main()
