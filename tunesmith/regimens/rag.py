"""Retrieval-augmented prompting: chunk the domain corpus, build a BM25 / embedding / hybrid
index once (stored in the run directory), and insert the top-k passages, tagged with their
source ids, into each prompt. Works on top of any model, fine-tuned runs included
(model.name: runs/<sft-run>), so "fine-tuning + retrieval" is an arm too."""

from __future__ import annotations

import time

from tunesmith.data.schemas import load_dataset
from tunesmith.regimens.prompt import ACCEPTS, build_recipe, example_pairs
from tunesmith.retrieval import Retriever, chunk_documents, corpus_documents
from tunesmith.runs import start_run, update_run


def prepare(cfg, *, resume: bool = False, overwrite: bool = False, progress: bool = True) -> dict:
    t0 = time.time()
    rc = cfg.rag
    corpus = load_dataset(rc.corpus, "text")  # the corpus is checked before anything is built
    pairs, counts = [], {"corpus": len(corpus)}
    if cfg.data.train:
        ds = load_dataset(cfg.data.train, cfg.data.type, accept=ACCEPTS)
        pairs, counts["train"] = example_pairs(ds.rows(), ds.type), len(ds)
    docs = corpus_documents(corpus.rows())
    chunks = chunk_documents(docs, chunk_words=rc.chunk_words, overlap_words=rc.overlap_words)
    run = start_run(cfg, regimen="rag", files={"train": cfg.data.train or None, "corpus": rc.corpus}, counts=counts,
                    trains_weights=False, resume=resume, overwrite=overwrite)
    Retriever(chunks, method=rc.method).save(run / "index")  # embeddings are computed once, here
    recipe = build_recipe(cfg, pairs)
    recipe.rag = {"method": rc.method, "top_k": rc.top_k, "template": rc.template}
    recipe.save(run)
    summary = {"status": "completed", "steps": 0, "final_loss": None, "trained_tokens": 0, "trainable_params": 0,
               "train_seconds": 0.0, "tokens_per_s": 0.0, "wall_seconds": round(time.time() - t0, 2),
               "system_prompt": cfg.data.system_prompt, "chunks": len(chunks), "documents": len(docs)}
    update_run(run, **summary)
    return {"run_dir": str(run), **summary}


train = prepare
