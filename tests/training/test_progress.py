"""Trainer output without --verbose: the loss in the progress bar, no logged dict printed as a line (as
transformers' ProgressCallback / PrinterCallback do); with --verbose, transformers' own output."""

from __future__ import annotations

import os

import pytest
import torch


class _Rows(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        ids = torch.tensor([1, 5 + i % 7, 9, 2])
        return {"input_ids": ids, "attention_mask": torch.ones(4, dtype=torch.long), "labels": ids}


@pytest.mark.parametrize("bars", [True, False])
@pytest.mark.parametrize("verbose", [False, True])
def test_quiet_trainer_prints_no_logged_dicts_unless_verbose(tmp_path, capsys, monkeypatch, bars, verbose):
    from transformers import Trainer, TrainingArguments

    from rexbert_common.executors import VERBOSE_ENV
    from tests.console import console_lines
    from tests.tiny_models import tiny_bpe_tokenizer, tiny_modernbert
    from training.progress import quiet_trainer

    monkeypatch.setitem(os.environ, VERBOSE_ENV, "1" if verbose else "0")
    args = TrainingArguments(
        str(tmp_path), max_steps=3, logging_steps=1, per_device_train_batch_size=4, report_to=[],
        disable_tqdm=not bars, use_cpu=True, save_strategy="no",
    )  # fmt: skip
    trainer = quiet_trainer(
        Trainer(model=tiny_modernbert(tiny_bpe_tokenizer()), args=args, train_dataset=_Rows())
    )
    capsys.readouterr()
    trainer.train()
    captured = capsys.readouterr()
    printed = console_lines(captured.out) + console_lines(captured.err)
    assert any("'loss'" in line for line in printed) is verbose, printed
    if not verbose:
        assert printed == []
        assert [entry["step"] for entry in trainer.state.log_history if "loss" in entry] == [1, 2, 3]
