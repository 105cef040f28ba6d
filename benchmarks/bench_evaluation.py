"""MLM top-k evaluator throughput: ``evaluation.mlm_recovery`` vs the straightforward loop (issue 5).

Compared on the same model and the same raw texts (unique ESCI product texts: title + description +
bullets, truncated to 512 tokens; lengths spread over ~10-512 tokens), examples/s from raw text to top-k
hits, tokenisation and masking included:

  baseline   -- what a user would write: tokenize, ``DataCollatorForLanguageModeling`` (15%) over batches of
                32 in file order (padded to the longest), full (B, S, V) logits, ``topk(5)`` at labelled
                positions.
  ours       -- ``build_examples`` (span protocol, truncate packing) + ``MaskedTokenRanker``: length-bucketed
                batches under a padded-token budget, vocabulary projection only at masked positions.
  ours_coll  -- ours with the collator protocol (the baseline's masks): isolates bucketing + sparse head.

Models: a randomly initialised micro-size encoder (7 layers, 256 hidden, vocab 50,368 like ModernBERT)
as transformers' ``ModernBertForMaskedLM`` and/or ``modeling_rexbert.RexBertForMaskedLM``. Random weights
do not change the cost. Runs are interleaved (A B C, C B A, ...) and medians compared.

Usage:
  .venv/bin/python -m benchmarks.bench_evaluation [--quick] [--models modernbert,rexbert] [--texts 256]
"""

from __future__ import annotations

import argparse

import torch

from benchmarks._common import bert_tokenizer, esci_product_texts, interleaved_timings, markdown_table, median

VOCAB_SIZE = 50_368
MICRO = {"hidden_size": 256, "num_hidden_layers": 7, "intermediate_size": 384, "num_attention_heads": 4}


def build_model(kind: str, tokenizer):
    t = tokenizer
    ids = {
        "pad_token_id": t.pad_token_id,
        "cls_token_id": t.cls_token_id,
        "sep_token_id": t.sep_token_id,
        "bos_token_id": t.cls_token_id,
        "eos_token_id": t.sep_token_id,
    }
    if kind == "modernbert":
        from transformers import ModernBertConfig, ModernBertForMaskedLM

        config = ModernBertConfig(
            vocab_size=VOCAB_SIZE, max_position_embeddings=1024, **MICRO, **ids, attn_implementation="sdpa"
        )
        return ModernBertForMaskedLM(config).eval()
    if kind == "rexbert":
        from modeling_rexbert import RexBertConfig, RexBertForMaskedLM

        config = RexBertConfig.for_size(
            "micro", vocab_size=VOCAB_SIZE, mask_token_id=t.mask_token_id, max_position_embeddings=1024, **ids
        )
        return RexBertForMaskedLM(config).eval()
    raise ValueError(f"unknown model {kind!r}: expected modernbert or rexbert")


@torch.inference_mode()
def baseline(model, tokenizer, texts: list[str], batch_size: int = 32, max_length: int = 512) -> float:
    """The straightforward loop. Returns top-5 accuracy (to keep the work observable)."""
    from transformers import DataCollatorForLanguageModeling

    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15, seed=0)
    encoded = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    hits, total = 0, 0
    for start in range(0, len(encoded), batch_size):
        batch = collator([{"input_ids": ids} for ids in encoded[start : start + batch_size]])
        logits = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits  # (B, S, V)
        selected = batch["labels"] != -100
        top5 = logits[selected].topk(5, dim=-1).indices  # (N, 5)
        hits += int((top5 == batch["labels"][selected][:, None]).any(-1).sum())
        total += int(selected.sum())
    return hits / max(total, 1)


def ours(model, tokenizer, texts: list[str], protocol: str = "span") -> float:
    from evaluation.metrics import topk_accuracy
    from evaluation.mlm_recovery import MLMRecoveryConfig, build_examples
    from evaluation.mlm_scoring import MaskedTokenRanker

    cfg = MLMRecoveryConfig(protocol=protocol, packing="truncate", block_sizes=(512,))
    examples = build_examples(texts, tokenizer, 512, cfg)
    ranks = MaskedTokenRanker(model, tokenizer.pad_token_id, max_tokens=cfg.max_tokens).ranks(examples)
    return topk_accuracy(torch.cat([torch.as_tensor(r) for r in ranks]).numpy(), (5,))[5]


def padding_stats(tokenizer, texts: list[str], batch_size: int = 32) -> tuple[float, float]:
    """Padded / real tokens for file-order batches of 32 vs our length buckets."""
    from evaluation.mlm_scoring import length_buckets

    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=512)["input_ids"]]
    real = sum(lengths)
    naive = sum(
        max(lengths[i : i + batch_size]) * len(lengths[i : i + batch_size])
        for i in range(0, len(lengths), batch_size)
    )
    bucketed = sum(max(lengths[i] for i in b) * len(b) for b in length_buckets(lengths, 16384))
    return naive / real, bucketed / real


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="64 texts, 1 repeat")
    parser.add_argument("--models", default="modernbert,rexbert")
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CPU is shared)")
    args = parser.parse_args(argv)
    n_texts, repeats = (64, 1) if args.quick else (args.texts, args.repeats)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tokenizer = bert_tokenizer()
    texts = esci_product_texts()[:n_texts]
    naive_pad, bucket_pad = padding_stats(tokenizer, texts)
    rows = []
    for kind in [m.strip() for m in args.models.split(",") if m.strip()]:
        model = build_model(kind, tokenizer)
        fns = {
            "baseline": lambda m=model: baseline(m, tokenizer, texts),
            "ours": lambda m=model: ours(m, tokenizer, texts),
            "ours_coll": lambda m=model: ours(m, tokenizer, texts, "collator"),
        }
        times = interleaved_timings(fns, repeats=repeats, warmup=1)
        base = median(times["baseline"])
        for name in fns:
            t = median(times[name])
            rows.append([kind, name, len(texts), f"{t:.2f}", f"{len(texts) / t:.1f}", f"{base / t:.2f}x"])
    print(
        f"texts: {len(texts)} ESCI product texts (<= 512 tokens); threads: {args.threads}; repeats: {repeats}"
    )
    print(
        f"padded/real tokens: file-order batches of 32 = {naive_pad:.2f}, length buckets = {bucket_pad:.2f}\n"
    )
    print(
        markdown_table(
            ["model", "evaluator", "texts", "median s", "examples/s", "speed-up vs baseline"], rows
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
