"""Training-path benchmark: RexBERT (packing + unpadding + sparse prediction) vs a careful HF user's path.

Same model size (micro, Table 2, or ``--size tiny``), same documents, same real-token budget, same
tokenizer, same 30% masking rate, on this machine:

* **rexbert**: documents best-fit packed into 512-token rows, a shuffled sample of them (as a phase
  shuffles its rows) → ``PackedMLMCollator`` (30% Poisson-span masking, document ids) →
  ``RexBertForMaskedLM`` (unpadded varlen attention, sparse MLM head) trained by ``RexBertTrainer``
  (StableAdamW, WSD).
* **hf**: one document per row (split at 512), batches of similar lengths (transformers'
  ``LengthGroupedSampler``, which ``train_sampling_strategy="group_by_length"`` -- transformers 5's
  replacement for the removed ``group_by_length=True`` -- uses; see ``grouped_batches``) padded to their
  longest row → ``DataCollatorForLanguageModeling(
  mlm_probability=0.3)`` → ``transformers.ModernBertForMaskedLM(sparse_prediction=True)`` (sdpa; the
  head runs on the labelled tokens only) trained by ``transformers.Trainer`` (AdamW). Its rows per step
  are chosen so both paths see the same mean real tokens per step over the same token budget.

Precision (``--dtype``, default ``auto``): both paths train under the same ``TrainingArguments(bf16=...)``
autocast that ``rexbert_common.precision`` picks (bf16 where the CPU computes it natively and faster, as
``mixed_precision: auto`` does), with fp32 master weights. When that is bf16 the hf path also runs in fp32
(``hf-fp32``): the ratio is reported against transformers' faster precision, so the baseline is at its best.

Runs alternate (rexbert, hf, hf, rexbert, ...) and medians are reported, because the CPU is shared; so is
the median of each repeat's own ratio (its runs are adjacent, so a drift of the machine's speed between
repeats cancels).
Reported for every run: real (non-pad) tokens/s, the share of real tokens in the slots computed,
MFU (useful model FLOPs/s ÷ a measured matmul peak; ``MlmFlops`` with the same global/local layer types
for both), and masked-token top-1 accuracy of both final models on the same held-out documents
with identical uniformly-drawn 30% masks.

    REXBERT_DATA_DIR=../shared/data .venv/bin/python -m benchmarks.bench_training \\
        [--tokens 65536] [--repeats 2] [--size micro|tiny] [--dtype auto|bf16|fp32]
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
MLM_PROBABILITY = 0.3
LOCAL_WINDOW = 128  # total window of the local layers, both paths (ModernBERT's default)
# hidden, layers, intermediate, heads: micro is the paper's Table 2 size; tiny is for the smoke test
SIZES = {"micro": (256, 7, 384, 4), "tiny": (64, 4, 96, 2)}
QUICK = ("--size", "tiny", "--docs", "300", "--vocab", "1024", "--tokens", "4096", "--rows", "2")


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


def _model_kwargs(tokenizer, size: str) -> dict:
    from training.tokenizer import padded_vocab_size

    hidden, layers, intermediate, heads = SIZES[size]
    return dict(
        vocab_size=padded_vocab_size(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        intermediate_size=intermediate,
        num_attention_heads=heads,
        local_attention=LOCAL_WINDOW,
        max_position_embeddings=SEQ,
        pad_token_id=tokenizer.pad_token_id,
        cls_token_id=tokenizer.cls_token_id,
        sep_token_id=tokenizer.sep_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        global_rope_theta=10_000.0,
        local_rope_theta=10_000.0,
    )


def _args(out: Path, steps: int, rows: int, bf16: bool, **extra):
    from transformers import TrainingArguments

    return TrainingArguments(
        bf16=bf16,
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


class SlotCounter:
    """Wraps a collator and counts the token slots (real + padding) the model is given."""

    def __init__(self, collator) -> None:
        self.collator, self.slots = collator, 0

    def __call__(self, examples):
        batch = self.collator(examples)
        self.slots += batch["input_ids"].numel()
        return batch


def packed_rows(pieces: list[list[int]], steps: int, rows: int) -> list:
    """The rexbert run's rows: every piece best-fit packed into SEQ-token rows, shuffled (as a phase's
    rows are; best-fit lists the full single-document rows first), the first ``steps × rows`` taken, so
    both paths train on a random sample of the same corpus."""
    from training.packing import TokenizedDoc, best_fit_pack

    packed = best_fit_pack([TokenizedDoc(p) for p in pieces], SEQ)
    order = np.random.default_rng(0).permutation(len(packed))
    return [packed[i] for i in order[: steps * rows]]


def run_rexbert(tokenizer, pieces, steps: int, rows: int, out: Path, size: str = "micro", bf16: bool = False):
    from modeling_rexbert import RexBertConfig, RexBertForMaskedLM
    from training.batch_plan import plan_batches
    from training.collator import PackedMLMCollator, StepCollator
    from training.masking import MaskingConfig, SpanMasker
    from training.phase_data import PackedDataset
    from training.recipe import PhaseConfig
    from training.trainer import RexBertTrainer

    packed = packed_rows(pieces, steps, rows)
    phase = PhaseConfig(
        tokens=1,
        max_seq_len=SEQ,
        batch_size=rows,
        micro_batch_size=rows,
        lr=LR,
        weight_decay=3e-4,
        warmup_fraction=0.1,
        decay_fraction=0.0,
        masking=MaskingConfig(mlm_probability=MLM_PROBABILITY, span_lambda=3.0),
    )
    special = [
        tokenizer.cls_token_id,
        tokenizer.sep_token_id,
        tokenizer.pad_token_id,
        tokenizer.mask_token_id,
        tokenizer.unk_token_id,
    ]
    collator = PackedMLMCollator(
        SpanMasker(phase.masking, tokenizer.mask_token_id, special, len(tokenizer)),
        seed=0,
        local_window=LOCAL_WINDOW,
    )
    torch.manual_seed(0)
    config = RexBertConfig(
        **_model_kwargs(tokenizer, size), mask_token_id=tokenizer.mask_token_id, attn_implementation="sdpa"
    )
    model = RexBertForMaskedLM(config)
    plan = plan_batches([len(r.input_ids) for r in packed], phase, world_size=1)
    trainer = RexBertTrainer(
        model=model,
        args=_args(out, steps, rows, bf16, remove_unused_columns=False, max_grad_norm=0.0),
        data_collator=StepCollator(collator, rows),
        train_dataset=PackedDataset(packed),
        phase=phase,
        batch_plan=plan,
    )
    elapsed, cpu = _timed(trainer.train)
    lengths = np.array([n for r in packed for n in r.doc_lengths])
    # rows of SEQ slots (the model then unpads)
    return model, (elapsed, cpu), lengths, len(packed) * SEQ, trainer.state.global_step


def grouped_batches(lengths: list[int], rows: int, budget: int, seed: int = 0) -> list[int]:
    """Indices of whole batches drawn at random from one epoch of transformers' ``LengthGroupedSampler``
    over all pieces, until they hold ``budget`` real tokens.

    Why not run ``train_sampling_strategy="group_by_length"`` on the budget's own documents: the sampler
    groups within ``min(n // (4 · rows), 50)`` batches, which is one batch (no grouping at all) for a
    budget of a few steps; a user's full-corpus run groups within 50. Replaying a random sample of the
    batches a full-corpus epoch would make keeps both the padding and the data mix of that run.
    """
    from transformers.trainer_pt_utils import LengthGroupedSampler

    order = list(LengthGroupedSampler(rows, lengths=lengths, generator=torch.Generator().manual_seed(seed)))
    batches = [order[i : i + rows] for i in range(0, len(order) - rows + 1, rows)]  # full batches only
    chosen, total = [], 0
    for b in np.random.default_rng(seed).permutation(len(batches)):
        chosen += batches[b]
        total += sum(lengths[i] for i in batches[b])
        if total >= budget:
            break
    return chosen


def hf_trainer(tokenizer, pieces, rows: int, out: Path, budget: int, size: str = "micro", bf16: bool = False):
    """The careful user's setup on length-grouped batches holding ≥ ``budget`` real tokens."""
    from datasets import Dataset
    from transformers import DataCollatorForLanguageModeling, ModernBertConfig, ModernBertForMaskedLM, Trainer

    kwargs = _model_kwargs(tokenizer, size)
    rope_keys = ("global_rope_theta", "local_rope_theta")
    kwargs = {k: v for k, v in kwargs.items() if k not in rope_keys}
    config = ModernBertConfig(**kwargs, sparse_prediction=True, attn_implementation="sdpa")
    config.rope_parameters = {
        "full_attention": {"rope_type": "default", "rope_theta": 10_000.0},
        "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
    }
    torch.manual_seed(0)
    model = ModernBertForMaskedLM(config)
    chosen = [pieces[i] for i in grouped_batches([len(p) for p in pieces], rows, budget)]
    data = Dataset.from_dict({"input_ids": chosen, "length": [len(p) for p in chosen]})
    steps = -(-len(data) // rows)
    collator = SlotCounter(DataCollatorForLanguageModeling(tokenizer, mlm_probability=MLM_PROBABILITY))
    args = _args(
        out,
        steps,
        rows,
        bf16,
        weight_decay=0.1,
        warmup_steps=max(1, steps // 10),
        lr_scheduler_type="constant_with_warmup",
        max_grad_norm=1.0,
        train_sampling_strategy="sequential",  # the grouped batches, in the drawn order
    )
    return Trainer(model=model, args=args, data_collator=collator, train_dataset=data)


def run_hf(tokenizer, pieces, rows: int, out: Path, budget: int, size: str = "micro", bf16: bool = False):
    trainer = hf_trainer(tokenizer, pieces, rows, out, budget, size, bf16)
    elapsed, cpu = _timed(trainer.train)
    lengths = np.array(trainer.train_dataset["length"])
    return trainer.model, (elapsed, cpu), lengths, trainer.data_collator.slots, trainer.state.global_step


def _timed(work) -> tuple[float, float]:
    """Wall and CPU seconds of ``work()``. With one thread, CPU seconds are what a quiet machine's wall
    time would be: the ratio to compare when other jobs share the cores."""
    start, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - start, time.process_time() - cpu


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


def attention_pairs(lengths: np.ndarray, window: int) -> tuple[float, float]:
    """(query, key) pairs of global and of local layers for documents of ``lengths`` tokens:
    attention within each document, and on local layers only ``|i - j| <= window // 2``."""
    lengths = lengths.astype(np.float64)
    w = np.minimum(window // 2, lengths - 1)
    # a document of L tokens: L diagonal pairs + 2 · Σ_{k=1..w} (L - k) off-diagonal ones
    local = lengths + 2.0 * (w * lengths - w * (w + 1) / 2.0)
    return float((lengths**2).sum()), float(local.sum())


def useful_flops(config, lengths: np.ndarray) -> float:
    """The same useful-FLOP count for both paths: dense layers on real tokens, attention per document
    with each layer's own type (global, or local window), the MLM head on the masked share only."""
    from training.mfu import MlmFlops

    real = int(lengths.sum())
    return MlmFlops(config).step(real, int(MLM_PROBABILITY * real), *attention_pairs(lengths, LOCAL_WINDOW))


def _machine() -> dict:
    return {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=65536, help="real-token budget per run")
    parser.add_argument("--rows", type=int, default=8, help="rexbert rows (×512) per step")
    parser.add_argument("--repeats", type=int, default=2, help="runs per path (alternating)")
    parser.add_argument("--size", choices=sorted(SIZES), default="micro")
    parser.add_argument(
        "--docs", type=int, default=3700, help="documents (1 in 5 WikiText, 1 in 30 held out)"
    )
    parser.add_argument("--vocab", type=int, default=16384)
    parser.add_argument(
        "--dtype",
        choices=("auto", "bf16", "fp32"),
        default="auto",
        help="precision of both paths (auto: by CPU)",
    )
    parser.add_argument("--out", default="outputs/bench_training")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run: " + " ".join(QUICK))
    args = parser.parse_args(argv)
    if args.quick:
        args = parser.parse_args([*QUICK, *(argv if argv is not None else sys.argv[1:])])
    data_dir = Path(os.environ.get("REXBERT_DATA_DIR", ROOT.parent / "shared" / "data"))
    from rexbert_common.precision import resolve_precision
    from training.mfu import measure_peak_flops
    from training.tokenizer import train_bpe_tokenizer

    texts = _docs(data_dir, n_wiki=args.docs // 5, n_products=args.docs - args.docs // 5)
    n_held = max(1, len(texts) // 30)
    held_out, train_texts = texts[:n_held], texts[n_held:]
    tokenizer = train_bpe_tokenizer(train_texts, vocab_size=args.vocab)
    pieces = _pieces(tokenizer, train_texts)
    eval_pieces = _pieces(tokenizer, held_out)
    steps = max(2, args.tokens // (args.rows * SEQ))
    mean_len = float(np.mean([len(p) for p in pieces]))
    hf_rows = max(1, round(args.rows * SEQ * 0.99 / mean_len))  # ≈ same real tokens per step
    # the real tokens of the rexbert run (its rows are packed, so known up front): the hf budget
    packed = packed_rows(pieces, steps, args.rows)
    budget = sum(len(p.input_ids) for p in packed)
    out = Path(args.out)
    precision = resolve_precision(args.dtype, "cpu", log=lambda line: print(line, flush=True))
    # path -> bf16 autocast; with bf16, transformers' path also runs in fp32 (the faster one is its best)
    paths = {
        "rexbert": precision.bf16,
        "hf": precision.bf16,
        **({"hf-fp32": False} if precision.bf16 else {}),
    }
    results: dict[str, list[dict]] = {name: [] for name in paths}
    order = list(paths)
    for r in range(args.repeats):
        for name in order if r % 2 == 0 else reversed(order):
            bf16 = paths[name]
            # the CPU is shared: the peak (in the run's precision) is re-measured next to each run
            peak = measure_peak_flops("cpu", torch.bfloat16 if bf16 else torch.float32, seconds=1.0)
            load = os.getloadavg()[0]
            if name == "rexbert":
                rows = args.rows
                model, (elapsed, cpu), lengths, slots, optimizer_steps = run_rexbert(
                    tokenizer, pieces, steps, rows, out / name, args.size, bf16
                )
            else:
                rows = hf_rows
                model, (elapsed, cpu), lengths, slots, optimizer_steps = run_hf(
                    tokenizer, pieces, rows, out / name, budget, args.size, bf16
                )
            real = int(lengths.sum())
            entry = {
                "run": r,
                "precision": "bf16" if bf16 else "fp32",
                "seconds": elapsed,
                "real_tokens": real,
                "tokens_per_s": real / elapsed,
                "cpu_seconds": cpu,
                "tokens_per_cpu_s": real / cpu,
                "mfu": useful_flops(model.config, lengths) / elapsed / peak,
                "peak_gflops": peak / 1e9,
                "load_1min": load,
                "rows_per_step": rows,
                "optimizer_steps": optimizer_steps,
                "real_share_of_slots": real / slots,
                "masked_accuracy": masked_accuracy(model, tokenizer, eval_pieces),
            }
            results[name].append(entry)
            print(
                name,
                json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in entry.items()}),
                flush=True,
            )
    summary = {
        **_machine(),
        "precision": precision.as_dict(),
        "size": args.size,
        "steps_rexbert": steps,
        "mean_doc_piece_tokens": mean_len,
        "unigram_baseline_accuracy": unigram_baseline(tokenizer, pieces, eval_pieces),
        "vocab": len(tokenizer),
    }
    for name, entries in results.items():
        keys = (
            "tokens_per_s",
            "tokens_per_cpu_s",
            "mfu",
            "masked_accuracy",
            "seconds",
            "real_share_of_slots",
        )
        for key in keys:
            summary[f"{name}_{key}"] = statistics.median(e[key] for e in entries)
    summary["speedup_tokens_per_s"] = summary["rexbert_tokens_per_s"] / summary["hf_tokens_per_s"]
    fastest_hf = max(summary[f"{name}_tokens_per_s"] for name in paths if name.startswith("hf"))
    summary["speedup_vs_fastest_hf"] = summary["rexbert_tokens_per_s"] / fastest_hf
    # the machine's speed drifts between runs: each repeat's own ratio (its runs are adjacent) is steadier
    paired = [
        results["rexbert"][r]["tokens_per_s"]
        / max(results[name][r]["tokens_per_s"] for name in paths if name.startswith("hf"))
        for r in range(args.repeats)
    ]
    summary["paired_speedups_vs_fastest_hf"] = paired
    summary["paired_speedup_vs_fastest_hf"] = statistics.median(paired)
    fastest_hf_cpu = max(summary[f"{name}_tokens_per_cpu_s"] for name in paths if name.startswith("hf"))
    summary["cpu_speedup_vs_fastest_hf"] = summary["rexbert_tokens_per_cpu_s"] / fastest_hf_cpu
    summary["runs"] = results
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
