"""Training-path benchmark: RexBERT (packing + unpadding + sparse prediction) vs the usual HF path.

Same model size (micro, Table 2), same documents, same real-token budget, same tokenizer, on this CPU:

* **rexbert**: documents best-fit packed into 512-token rows → ``PackedMLMCollator`` (30% Poisson-span
  masking, document ids) → ``RexBertForMaskedLM`` (unpadded varlen attention, sparse MLM head) trained by
  ``RexBertTrainer`` (StableAdamW, WSD).
* **hf**: one document per row (split at 512), padded to the longest row of each batch →
  ``DataCollatorForLanguageModeling(mlm_probability=0.3)`` → ``transformers.ModernBertForMaskedLM``
  (sdpa, dense S×S masks, dense head) trained by ``transformers.Trainer`` (AdamW). Its rows per step are
  chosen so both paths see the same mean real tokens per step, and both run the same number of steps.

Runs alternate (rexbert, hf, hf, rexbert, ...) and medians are reported, because the CPU is shared.
Reported: real (non-pad) tokens/s, MFU (useful model FLOPs/s ÷ a measured matmul peak, the same FLOP
count for both), and masked-token top-1 accuracy of both final models on the same held-out documents
with identical uniformly-drawn 30% masks.

    REXBERT_DATA_DIR=../shared/data .venv/bin/python -m benchmarks.bench_training \\
        [--tokens 65536] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SEQ = 512
LR = 3e-3


def _docs(data_dir: Path, n_wiki: int, n_products: int) -> list[str]:
    """Mixed-length real text: WikiText blocks (long) and Icecat product records (short)."""
    from training.data import load_source
    from training.recipe import SourceConfig

    wiki = load_source(SourceConfig(name="wiki", path=str(data_dir / "wikitext2_raw_test/wiki.test.raw")))
    icecat = str(data_dir / "icecat_products_chorus/icecat_text.parquet")
    fields = ["title", "short_description"]
    products = load_source(SourceConfig(name="icecat", path=icecat, text_fields=fields))
    rng = np.random.default_rng(0)
    docs = [wiki.texts[i] for i in rng.permutation(len(wiki.texts))[:n_wiki]]
    docs += [products.texts[i] for i in rng.permutation(len(products.texts))[:n_products]]
    return [docs[i] for i in rng.permutation(len(docs))]


def _pieces(tokenizer, texts: list[str]) -> list[list[int]]:
    """Tokenized documents split into ≤ SEQ-token pieces (both paths train on exactly these tokens)."""
    out = []
    for ids in tokenizer(texts, add_special_tokens=True, verbose=False)["input_ids"]:
        out.extend(ids[i : i + SEQ] for i in range(0, len(ids), SEQ))
    return out


def _model_kwargs(tokenizer) -> dict:
    from training.tokenizer import padded_vocab_size

    return dict(
        vocab_size=padded_vocab_size(tokenizer),
        hidden_size=256,
        num_hidden_layers=7,
        intermediate_size=384,
        num_attention_heads=4,
        max_position_embeddings=SEQ,
        pad_token_id=tokenizer.pad_token_id,
        cls_token_id=tokenizer.cls_token_id,
        sep_token_id=tokenizer.sep_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        global_rope_theta=10_000.0,
        local_rope_theta=10_000.0,
    )


def _args(out: Path, steps: int, rows: int, **extra):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(out),
        max_steps=steps,
        per_device_train_batch_size=rows,
        learning_rate=LR,
        logging_steps=max(1, steps // 4),
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=0,
        dataloader_num_workers=0,
        disable_tqdm=True,
        **extra,
    )


def run_rexbert(tokenizer, pieces, steps: int, rows: int, out: Path):
    from modeling_rexbert import RexBertConfig, RexBertForMaskedLM
    from training.batch_plan import plan_batches
    from training.collator import PackedMLMCollator, StepCollator
    from training.masking import MaskingConfig, SpanMasker
    from training.packing import TokenizedDoc, best_fit_pack
    from training.phase_data import PackedDataset
    from training.recipe import PhaseConfig
    from training.trainer import RexBertTrainer

    packed = best_fit_pack([TokenizedDoc(p) for p in pieces], SEQ)
    packed = packed[: steps * rows]
    phase = PhaseConfig(
        tokens=1,
        max_seq_len=SEQ,
        batch_size=rows,
        micro_batch_size=rows,
        lr=LR,
        weight_decay=3e-4,
        warmup_fraction=0.1,
        decay_fraction=0.0,
        masking=MaskingConfig(mlm_probability=0.3, span_lambda=3.0),
    )
    special = [
        tokenizer.cls_token_id,
        tokenizer.sep_token_id,
        tokenizer.pad_token_id,
        tokenizer.mask_token_id,
        tokenizer.unk_token_id,
    ]
    collator = PackedMLMCollator(
        SpanMasker(phase.masking, tokenizer.mask_token_id, special, len(tokenizer)), seed=0, local_window=128
    )
    torch.manual_seed(0)
    config = RexBertConfig(
        **_model_kwargs(tokenizer), mask_token_id=tokenizer.mask_token_id, attn_implementation="sdpa"
    )
    model = RexBertForMaskedLM(config)
    plan = plan_batches([len(r.input_ids) for r in packed], phase, world_size=1)
    trainer = RexBertTrainer(
        model=model,
        args=_args(out, steps, rows, remove_unused_columns=False, max_grad_norm=0.0),
        data_collator=StepCollator(collator, rows),
        train_dataset=PackedDataset(packed),
        phase=phase,
        batch_plan=plan,
    )
    start = time.perf_counter()
    trainer.train()
    elapsed = time.perf_counter() - start
    lengths = np.array([n for r in packed for n in r.doc_lengths])
    return model, elapsed, lengths, len(packed) * SEQ


def run_hf(tokenizer, pieces, steps: int, rows: int, out: Path, budget: int):
    from transformers import DataCollatorForLanguageModeling, ModernBertConfig, ModernBertForMaskedLM, Trainer

    kwargs = _model_kwargs(tokenizer)
    rope_keys = ("global_rope_theta", "local_rope_theta")
    kwargs = {k: v for k, v in kwargs.items() if k not in rope_keys}
    config = ModernBertConfig(**kwargs, attn_implementation="sdpa")
    config.rope_parameters = {
        "full_attention": {"rope_type": "default", "rope_theta": 10_000.0},
        "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
    }
    torch.manual_seed(0)
    model = ModernBertForMaskedLM(config)
    # the shortest prefix of the documents holding the same real tokens as the rexbert run
    n_docs = int(np.searchsorted(np.cumsum([len(p) for p in pieces]), budget)) + 1
    data = [{"input_ids": p} for p in pieces[:n_docs]]
    steps = -(-len(data) // rows)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.3)
    args = _args(
        out,
        steps,
        rows,
        weight_decay=0.1,
        warmup_steps=max(1, steps // 10),
        lr_scheduler_type="constant_with_warmup",
        max_grad_norm=1.0,
    )
    trainer = Trainer(model=model, args=args, data_collator=collator, train_dataset=data)
    start = time.perf_counter()
    trainer.train()
    elapsed = time.perf_counter() - start
    return model, elapsed, np.array([len(d["input_ids"]) for d in data]), None


def _eval_batches(tokenizer, pieces: list[list[int]], seed: int = 123):
    """Identical uniform 30% masks (specials never masked) in padded batches of 8 rows:
    yields (input_ids (B, S), attention_mask (B, S), chosen (B, S) bool)."""
    rng = np.random.default_rng(seed)
    special = torch.tensor(sorted({tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id}))
    for start in range(0, len(pieces), 8):
        chunk = pieces[start : start + 8]
        width = max(len(p) for p in chunk)
        ids = torch.full((len(chunk), width), tokenizer.pad_token_id)
        attn = torch.zeros_like(ids)
        for b, p in enumerate(chunk):
            ids[b, : len(p)] = torch.tensor(p)
            attn[b, : len(p)] = 1
        maskable = attn.bool() & ~torch.isin(ids, special)
        yield ids, attn, maskable & torch.from_numpy(rng.random(ids.shape) < 0.3)


@torch.no_grad()
def masked_accuracy(model, tokenizer, pieces: list[list[int]]) -> float:
    """Top-1 accuracy of ``model`` on the evaluation masks (both models accept padded batches)."""
    model.eval()
    correct = total = 0
    for ids, attn, chosen in _eval_batches(tokenizer, pieces):
        logits = model(input_ids=ids.masked_fill(chosen, tokenizer.mask_token_id), attention_mask=attn).logits
        correct += int((logits[chosen].argmax(-1) == ids[chosen]).sum())
        total += int(chosen.sum())
    model.train()
    return correct / max(1, total)


def unigram_baseline(tokenizer, train_pieces: list[list[int]], pieces: list[list[int]]) -> float:
    """Accuracy of always predicting the most frequent training token (what an MLM learns first)."""
    counts = np.bincount(np.concatenate([np.asarray(p) for p in train_pieces]), minlength=len(tokenizer))
    counts[[tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id]] = 0
    top = int(counts.argmax())
    hits = total = 0
    for ids, _, chosen in _eval_batches(tokenizer, pieces):
        hits += int((ids[chosen] == top).sum())
        total += int(chosen.sum())
    return hits / max(1, total)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=65536, help="real-token budget per run")
    parser.add_argument("--rows", type=int, default=8, help="rexbert rows (×512) per step")
    parser.add_argument("--repeats", type=int, default=2, help="runs per path (alternating)")
    parser.add_argument("--vocab", type=int, default=16384)
    parser.add_argument("--out", default="outputs/bench_training")
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    data_dir = Path(os.environ.get("REXBERT_DATA_DIR", ROOT.parent / "shared" / "data"))
    from training.mfu import MlmFlops, measure_peak_flops  # noqa: I001
    from training.tokenizer import train_bpe_tokenizer

    texts = _docs(data_dir, n_wiki=700, n_products=3000)
    held_out, train_texts = texts[:120], texts[120:]
    tokenizer = train_bpe_tokenizer(train_texts, vocab_size=args.vocab)
    pieces = _pieces(tokenizer, train_texts)
    eval_pieces = _pieces(tokenizer, held_out)
    steps = max(2, args.tokens // (args.rows * SEQ))
    mean_len = float(np.mean([len(p) for p in pieces]))
    hf_rows = max(1, round(args.rows * SEQ * 0.99 / mean_len))  # ≈ same real tokens per step
    peak = measure_peak_flops("cpu", torch.float32, seconds=1.0)
    out = Path(args.out)
    results: dict[str, list[dict]] = {"rexbert": [], "hf": []}
    order = ["rexbert", "hf"]
    budget = None  # real tokens of the rexbert run (its rows are packed, so known up front)
    for r in range(args.repeats):
        for name in order if r % 2 == 0 else reversed(order):
            if name == "rexbert":
                rows = args.rows
                model, elapsed, lengths, slots = run_rexbert(tokenizer, pieces, steps, rows, out / name)
                budget = int(lengths.sum())
            else:
                rows = hf_rows
                if budget is None:
                    from training.packing import TokenizedDoc, best_fit_pack

                    packed = best_fit_pack([TokenizedDoc(p) for p in pieces], SEQ)[: steps * args.rows]
                    budget = sum(len(p.input_ids) for p in packed)
                model, elapsed, lengths, slots = run_hf(tokenizer, pieces, steps, rows, out / name, budget)
            real = int(lengths.sum())
            # the same useful-FLOP count for both paths: real tokens, attention within each document
            # (window 128 on local layers), the MLM head on the 30% selected tokens only
            lengths = lengths.astype(np.float64)
            model_flops = MlmFlops(model.config).step(
                real,
                int(0.3 * real),
                float((lengths**2).sum()),
                float((lengths * np.minimum(lengths, 129)).sum()),
            )
            entry = {
                "seconds": elapsed,
                "real_tokens": real,
                "tokens_per_s": real / elapsed,
                "mfu": model_flops / elapsed / peak,
                "rows_per_step": rows,
                "masked_accuracy": masked_accuracy(model, tokenizer, eval_pieces),
            }
            if slots:
                entry["packing_efficiency"] = real / slots
            results[name].append(entry)
            print(
                name,
                json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in entry.items()}),
                flush=True,
            )
    summary = {
        "peak_gflops": peak / 1e9,
        "steps": steps,
        "mean_doc_piece_tokens": mean_len,
        "unigram_baseline_accuracy": unigram_baseline(tokenizer, pieces, eval_pieces),
        "vocab": len(tokenizer),
        "threads": torch.get_num_threads(),
    }
    for name, entries in results.items():
        for key in ("tokens_per_s", "mfu", "masked_accuracy", "seconds"):
            summary[f"{name}_{key}"] = statistics.median(e[key] for e in entries)
    summary["speedup_tokens_per_s"] = summary["rexbert_tokens_per_s"] / summary["hf_tokens_per_s"]
    summary["runs"] = results
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
