"""Learning per token: RexBERT's training path against a plain transformers loop, one component at a time.

Both sides train the SAME tiny encoder shape (4 layers x 128 hidden, 4,096-token BPE, 128-token rows) on
the SAME packed rows (70% product text), for the same number of optimizer steps, and are scored on the same
unseen Icecat products (``rexbert_cli.product_check`` protocol: title + short description, 128 tokens, 15%
of tokens masked one at a time).

* ``reference``: ``transformers.ModernBertForMaskedLM`` + ``DataCollatorForLanguageModeling(mlm_probability)``
  on the rows as plain (B, 128) rows + ``torch.optim.AdamW`` + linear warmup / constant LR, a plain loop.
* ``rexbert``: ``RexBertForMaskedLM`` + ``PackedMLMCollator`` (single-token masking, packed documents)
  + ``StableAdamW`` + WSD, trained by ``RexBertTrainer`` -- the path ``rexbert train`` runs.

Variants swap one component of one side (``--variants``), to bisect a difference in learning speed:
``rexbert:adamw`` (torch AdamW in RexBertTrainer), ``reference:stableadamw``, ``reference:rexbert_model``,
``reference:our_masking`` ... (see ``VARIANTS``).

``--precision fp32 bf16 --seeds 0 1 2`` trains every variant in both precisions (bf16 = autocast, fp32
master weights and optimizer state) on each seed's rows, init and masks, and reports per precision the
mean unseen top-1 with its 95% t-interval over seeds, and the bf16 - fp32 difference paired by seed.

    REXBERT_DATA_DIR=../shared/data .venv/bin/python -m benchmarks.bench_learning --steps 200 \\
        [--variants reference rexbert ...] [--precision fp32 bf16] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class Setup:
    """What both sides share."""

    steps: int = 200
    rows: int = 32  # rows per optimizer step (= micro-batch)
    seq: int = 128
    hidden: int = 128
    layers: int = 4
    intermediate: int = 192
    heads: int = 4
    local_attention: int = 64
    vocab: int = 4096
    tokenizer_docs: int = 4000
    lr: float = 3e-3
    warmup_fraction: float = 0.05
    weight_decay: float = 1e-5
    mlm_probability: float = 0.3
    domain_share: float = 0.7
    eval_texts: int = 300
    seed: int = 0
    precision: str = "fp32"  # fp32 | bf16 (autocast; weights and optimizer state stay fp32)


@dataclass(frozen=True)
class Variant:
    """One training run: the reference loop or RexBERT's trainer, with components swapped."""

    loop: str = "reference"  # reference | rexbert
    model: str | None = None  # hf | rexbert (default: the loop's own)
    masking: str | None = None  # hf | ours
    optimizer: str | None = None  # adamw | stableadamw
    schedule: str | None = None  # constant | wsd
    extra: dict = field(default_factory=dict)

    def resolved(self) -> Variant:
        ours = self.loop == "rexbert"
        return replace(
            self,
            model=self.model or ("rexbert" if ours else "hf"),
            masking=self.masking or ("ours" if ours else "hf"),
            optimizer=self.optimizer or ("stableadamw" if ours else "adamw"),
            schedule=self.schedule or ("wsd" if ours else "constant"),
        )


VARIANTS: dict[str, Variant] = {
    "reference": Variant("reference"),
    "rexbert": Variant("rexbert"),
    "rexbert:adamw": Variant("rexbert", optimizer="adamw"),
    "reference:stableadamw": Variant("reference", optimizer="stableadamw"),
    "reference:rexbert_model": Variant("reference", model="rexbert"),
    "reference:our_masking": Variant("reference", model="rexbert", masking="ours"),
    "reference:rexbert_parts": Variant(
        "reference", model="rexbert", masking="ours", optimizer="stableadamw", schedule="wsd"
    ),
}


# ----------------------------------------------------------------------------------------------- data
def _sources(data_dir: Path):
    from training.data import load_source
    from training.recipe import SourceConfig

    general = [
        SourceConfig(name="wikitext2", path=str(data_dir / "wikitext2_raw_test/wiki.test.raw")),
        SourceConfig(name="gutenberg", path=str(data_dir / "gutenberg_nltk/gutenberg.zip")),
    ]
    domain = [
        SourceConfig(
            name="icecat",
            path=str(data_dir / "icecat_products_chorus/icecat_text.parquet"),
            text_fields=["title", "short_description"],
        ),
        SourceConfig(
            name="esci_products",
            path=str(data_dir / "esci_union_with_text/esci_union_with_text.parquet"),
            text_fields=["product_title", "product_brand", "product_color", "product_bullet_point"],
        ),
    ]
    return [load_source(s) for s in general], [load_source(s) for s in domain]


def heldout_texts(data_dir: Path, n: int) -> tuple[list[str], set[str]]:
    """Unseen Icecat products (the demo's held-out hash) as product-check texts, and all their texts."""
    import pyarrow.parquet as pq

    from curation.demo_data import is_heldout_product
    from rexbert_cli.product_check import product_texts

    rows = pq.read_table(data_dir / "icecat_products_chorus/icecat_text.parquet").to_pylist()
    held = [r for r in rows if is_heldout_product(r["id"])]
    texts = product_texts(held)
    return texts[:n], set(texts)


def build_rows(setup: Setup, tokenizer, general, domain, exclude: set[str]) -> list:
    """Packed rows of ``setup.seq`` tokens, ``domain_share`` of the TOKENS product text (documents cut at
    512 tokens, best-fit packed in buffers of 1,024 documents whose rows are shuffled: what the training
    path does), ``steps × rows`` rows."""
    from training.packing import TokenizedDoc, best_fit_pack

    rng = np.random.default_rng(setup.seed)
    streams = [s.cycle(np.random.default_rng([setup.seed, i])) for i, s in enumerate((*general, *domain))]
    n_general = len(general)
    need = setup.steps * setup.rows
    rows: list = []
    tokens = {True: 0, False: 0}
    while len(rows) < need:
        docs = []
        while len(docs) < 1024:
            is_domain = tokens[True] <= setup.domain_share * (tokens[True] + tokens[False])
            if is_domain:
                text = next(streams[n_general + int(rng.integers(len(domain)))])
            else:
                text = next(streams[int(rng.integers(n_general))])
            if text in exclude:
                continue
            ids = tokenizer(text, truncation=True, max_length=512, verbose=False)["input_ids"]
            tokens[is_domain] += len(ids)
            docs.append(TokenizedDoc(ids))
        packed = best_fit_pack(docs, setup.seq)
        rows.extend(packed[i] for i in rng.permutation(len(packed)))
    return rows[:need]


# ----------------------------------------------------------------------------------------------- models
def model_config(setup: Setup, tokenizer, kind: str):
    from modeling_rexbert import RexBertConfig
    from modeling_rexbert.conversion import rexbert_config_to_modernbert
    from training.tokenizer import padded_vocab_size, special_token_ids

    config = RexBertConfig(
        vocab_size=padded_vocab_size(tokenizer),
        hidden_size=setup.hidden,
        num_hidden_layers=setup.layers,
        intermediate_size=setup.intermediate,
        num_attention_heads=setup.heads,
        local_attention=setup.local_attention,
        max_position_embeddings=512,
        **special_token_ids(tokenizer),
        global_rope_theta=10_000.0,
        local_rope_theta=10_000.0,
        attn_implementation="sdpa",
        sparse_prediction=True,
    )
    if kind == "rexbert":
        return config
    hf = rexbert_config_to_modernbert(config)
    hf._attn_implementation = "sdpa"
    return hf


def make_model(setup: Setup, tokenizer, kind: str):
    from transformers import ModernBertForMaskedLM

    from modeling_rexbert import RexBertForMaskedLM

    torch.manual_seed(setup.seed)
    config = model_config(setup, tokenizer, kind)
    return RexBertForMaskedLM(config) if kind == "rexbert" else ModernBertForMaskedLM(config)


# ----------------------------------------------------------------------------------------------- pieces
def make_optimizer(setup: Setup, model, kind: str):
    from training.optim import StableAdamW, param_groups

    groups = param_groups(model, setup.weight_decay)
    if kind == "stableadamw":
        return StableAdamW(groups, lr=setup.lr, betas=(0.9, 0.98), eps=1e-6)
    return torch.optim.AdamW(groups, lr=setup.lr, betas=(0.9, 0.98), eps=1e-6)


def make_schedule(setup: Setup, optimizer, kind: str):
    from training.schedules import WSDSchedule, wsd_scheduler

    warmup = round(setup.warmup_fraction * setup.steps)
    decay = 0
    if kind == "wsd":
        return wsd_scheduler(optimizer, WSDSchedule(setup.steps, warmup_steps=warmup, decay_steps=decay))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, s / max(1, warmup)))


def hf_collate(setup: Setup, tokenizer) -> Callable[[list], dict]:
    """Rows as plain padded (B, seq) rows, masked by transformers' collator (documents attend each other)."""
    from transformers import DataCollatorForLanguageModeling

    collator = DataCollatorForLanguageModeling(
        tokenizer, mlm_probability=setup.mlm_probability, seed=setup.seed
    )
    return lambda rows, first: collator([{"input_ids": list(r.input_ids)} for r in rows])


def our_collate(setup: Setup, tokenizer) -> Callable[[list], dict]:
    from training.collator import PackedMLMCollator
    from training.masking import MaskingConfig, SpanMasker

    masker = SpanMasker(
        MaskingConfig(mlm_probability=setup.mlm_probability, span_lambda=0.0),
        tokenizer.mask_token_id,
        sorted(set(tokenizer.all_special_ids)),
        len(tokenizer),
    )
    collate = PackedMLMCollator(masker, seed=setup.seed, local_window=setup.local_attention)
    return lambda rows, first: collate(
        [
            {"row_id": first + i, "input_ids": r.input_ids, "doc_lengths": r.doc_lengths, "spans": []}
            for i, r in enumerate(rows)
        ]
    )


# ----------------------------------------------------------------------------------------------- loops
def reference_loop(setup: Setup, variant: Variant, tokenizer, rows) -> tuple:
    """A plain loop: forward, mean loss, backward, step, schedule."""
    from training.collator import STATS_KEY

    model = make_model(setup, tokenizer, variant.model).train()
    optimizer = make_optimizer(setup, model, variant.optimizer)
    schedule = make_schedule(setup, optimizer, variant.schedule)
    collate = hf_collate(setup, tokenizer) if variant.masking == "hf" else our_collate(setup, tokenizer)
    correct = labelled = 0
    losses = []
    for step in range(setup.steps):
        first = step * setup.rows
        batch = collate(rows[first : first + setup.rows], first)
        batch.pop(STATS_KEY, None)
        if "label_positions" in batch and variant.model == "hf":  # HF ModernBERT takes padded rows only
            raise ValueError("our packed masking needs the RexBERT model")
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=setup.precision == "bf16"):
            out = model(**batch)
        out.loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(out.loss.detach()))
        c, n = _batch_correct(out.logits.detach(), batch["labels"])
        correct, labelled = correct + c, labelled + n
        if (step + 1) % max(1, setup.steps // 4) == 0:
            accuracy = correct / labelled
            print(f"  step {step + 1}: loss {np.mean(losses[-10:]):.3f} masked accuracy {accuracy:.4f}")
            if step + 1 < setup.steps:
                correct = labelled = 0
    return model, losses, correct / max(1, labelled), setup.steps


def _batch_correct(logits: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
    targets = labels.reshape(-1)
    targets = targets[targets != -100]
    if logits.dim() == 3:
        logits = logits.reshape(-1, logits.shape[-1])[labels.reshape(-1) != -100]
    return int((logits.argmax(-1) == targets).sum()), int(targets.numel())


def rexbert_loop(setup: Setup, variant: Variant, tokenizer, rows, out: Path) -> tuple:
    """``RexBertTrainer`` exactly as ``rexbert train`` builds it, with the variant's swaps."""
    from transformers import TrainingArguments

    from training.batch_plan import plan_batches
    from training.collator import PackedMLMCollator, StepCollator
    from training.masking import MaskingConfig, SpanMasker
    from training.phase_data import PackedDataset
    from training.recipe import PhaseConfig
    from training.trainer import RexBertTrainer

    phase = PhaseConfig(
        tokens=1,
        max_seq_len=setup.seq,
        batch_size=setup.rows,
        micro_batch_size=setup.rows,
        lr=setup.lr,
        weight_decay=setup.weight_decay,
        warmup_fraction=setup.warmup_fraction,
        decay_fraction=0.0,
        masking=MaskingConfig(mlm_probability=setup.mlm_probability, span_lambda=0.0),
    )
    masker = SpanMasker(
        phase.masking, tokenizer.mask_token_id, sorted(set(tokenizer.all_special_ids)), len(tokenizer)
    )
    collator = PackedMLMCollator(masker, seed=setup.seed, local_window=setup.local_attention)
    model = make_model(setup, tokenizer, "rexbert")
    plan = plan_batches([len(r.input_ids) for r in rows], phase, world_size=1)
    args = TrainingArguments(
        output_dir=str(out),
        max_steps=setup.steps,
        per_device_train_batch_size=setup.rows,
        learning_rate=setup.lr,
        logging_steps=max(1, setup.steps // 4),
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=setup.seed,
        disable_tqdm=True,
        remove_unused_columns=False,
        max_grad_norm=0.0,
        bf16=setup.precision == "bf16",
    )

    class Trainer(RexBertTrainer):
        def create_optimizer(self, model=None):
            if variant.optimizer == "adamw" and self.optimizer is None:
                self.optimizer = make_optimizer(setup, self.model, "adamw")
            return super().create_optimizer(model)

    trainer = Trainer(
        model=model,
        args=args,
        data_collator=StepCollator(collator, setup.rows),
        train_dataset=PackedDataset(rows),
        phase=phase,
        batch_plan=plan,
    )
    trainer.train()
    logs = [e for e in trainer.state.log_history if "loss" in e]
    accuracy = logs[-1].get("masked_accuracy", float("nan"))
    return model, [e["loss"] for e in logs], accuracy, trainer.state.global_step


# ----------------------------------------------------------------------------------------------- eval
@torch.no_grad()
def unseen_top1(model, tokenizer, texts: list[str]) -> float:
    from rexbert_cli.product_check import masked_top1_of

    return masked_top1_of(model.eval(), tokenizer, texts).accuracy


def run(setup: Setup, names: list[str], data_dir: Path, out: Path) -> list[dict]:
    """Train and score each variant on ``setup``'s seed and precision."""
    return run_grid(setup, names, data_dir, out, seeds=[setup.seed], precisions=[setup.precision])


def run_grid(
    setup: Setup, names: list[str], data_dir: Path, out: Path, seeds: list[int], precisions: list[str]
) -> list[dict]:
    """Every (seed, precision, variant): each seed has its own tokenizer corpus, rows, init and masks,
    shared by its precisions and variants (so differences are paired by seed)."""
    from training.tokenizer import train_bpe_tokenizer

    general, domain = _sources(data_dir)
    texts, exclude = heldout_texts(data_dir, setup.eval_texts)
    results = []
    for seed in seeds:
        seeded = replace(setup, seed=seed)
        streams = [s.cycle(np.random.default_rng([seed, i])) for i, s in enumerate((*general, *domain))]
        corpus = [next(streams[i % len(streams)]) for i in range(setup.tokenizer_docs)]
        tokenizer = train_bpe_tokenizer(corpus, vocab_size=setup.vocab, model_max_length=setup.seq)
        rows = build_rows(seeded, tokenizer, general, domain, exclude)
        real = sum(len(r.input_ids) for r in rows)
        print(
            f"seed {seed}: {len(rows)} rows, {real} real tokens ({real / (len(rows) * setup.seq):.3f} of the "
            f"slots), {np.mean([len(r.doc_lengths) for r in rows]):.1f} documents per row",
            flush=True,
        )
        for precision in precisions:
            cell = replace(seeded, precision=precision)
            for name in names:
                variant = VARIANTS[name].resolved()
                start = time.perf_counter()
                if variant.loop == "rexbert":
                    folder = out / f"{name}-{precision}-seed{seed}"
                    model, losses, train_acc, steps = rexbert_loop(cell, variant, tokenizer, rows, folder)
                else:
                    model, losses, train_acc, steps = reference_loop(cell, variant, tokenizer, rows)
                seconds = time.perf_counter() - start
                result = {
                    "variant": name,
                    "seed": seed,
                    "precision": precision,
                    "steps": steps,
                    "final_loss": round(float(np.mean(losses[-max(1, len(losses) // 4) :])), 6),
                    "train_masked_accuracy": round(train_acc, 4),
                    "unseen_top1": round(unseen_top1(model, tokenizer, texts), 4),
                    "seconds": round(seconds, 1),
                    "real_tokens_per_s": round(real / seconds),
                }
                print(json.dumps(result), flush=True)
                results.append(result)
    return results


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and its two-sided 95% Student-t interval (a single value: the interval is that value)."""
    from scipy import stats

    values = np.asarray(values, dtype=float)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, mean, mean
    half = float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
    return mean, mean - half, mean + half


def precision_report(results: list[dict], metric: str = "unseen_top1") -> list[str]:
    """Markdown lines: per (variant, precision) the mean of ``metric`` with its 95% interval over seeds,
    and per variant bf16 - fp32 paired by seed, and whether bf16's mean lies in fp32's interval."""
    lines = ["| variant | precision | seeds | mean | 95% interval |", "|---|---|---|---|---|"]
    by_cell: dict[tuple[str, str], dict[int, float]] = {}
    for r in results:
        by_cell.setdefault((r["variant"], r["precision"]), {})[r["seed"]] = r[metric]
    for (variant, precision), per_seed in by_cell.items():
        mean, low, high = t_interval(list(per_seed.values()))
        lines.append(f"| {variant} | {precision} | {len(per_seed)} | {mean:.4f} | [{low:.4f}, {high:.4f}] |")
    for variant in dict.fromkeys(v for v, _ in by_cell):
        fp32, bf16 = by_cell.get((variant, "fp32")), by_cell.get((variant, "bf16"))
        if not fp32 or not bf16:
            continue
        seeds = sorted(set(fp32) & set(bf16))
        mean, low, high = t_interval([bf16[s] - fp32[s] for s in seeds])
        _, fp32_low, fp32_high = t_interval([fp32[s] for s in seeds])
        bf16_mean = float(np.mean([bf16[s] for s in seeds]))
        inside = fp32_low <= bf16_mean <= fp32_high
        lines.append(
            f"\n{variant}: bf16 - fp32 = {mean:+.4f} [{low:+.4f}, {high:+.4f}] (paired by seed, {len(seeds)} "
            f"seeds); bf16 mean {'inside' if inside else 'OUTSIDE'} the fp32 95% interval"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=Setup.steps)
    parser.add_argument("--lr", type=float, default=Setup.lr)
    parser.add_argument("--domain-share", type=float, default=Setup.domain_share, help="product-text share")
    parser.add_argument("--variants", nargs="+", default=["reference", "rexbert"], choices=list(VARIANTS))
    parser.add_argument("--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[Setup.seed])
    parser.add_argument("--out", default="outputs/bench_learning")
    parser.add_argument("--json", default=None, help="write every result here")
    args = parser.parse_args(argv)
    from rexbert_common.data import data_dir

    print(f"load {os.getloadavg()[0]:.1f}, cpu {torch.backends.cpu.get_cpu_capability()}", flush=True)
    setup = Setup(steps=args.steps, lr=args.lr, domain_share=args.domain_share)
    results = run_grid(setup, args.variants, data_dir(), Path(args.out), args.seeds, args.precision)
    print("\n".join(precision_report(results)))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
