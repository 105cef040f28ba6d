"""RexBERT pre-training: the three-phase curriculum on transformers' Trainer.

Public API (import the submodules; this package imports nothing heavy):

* ``training.recipe``: ``load_recipe(path, overrides)``, ``Recipe``, ``PhaseConfig``, ``RecipeError``
* ``training.curriculum``: ``run_curriculum(recipe, phases, resume=False)``
* ``training.run`` / ``training.cli``: the ``training/run.py`` entry point and ``rexbert train``
* ``training.prepare`` / ``training.prepare_cli``: ``run_prepare(recipe, phases, executor)`` and
  ``rexbert prepare`` (``source_index``, ``mixture``, ``phase_data``, ``phase_build``: the rows it builds)
* ``training.tokenizer``: ``load_tokenizer``, ``train_bpe_tokenizer``, ``padded_vocab_size``
* ``training.masking``: ``MaskingConfig``, ``SpanMasker``; ``training.attribute_miner``: ``AttributeMiner``
* ``training.packing``: ``best_fit_pack``; ``training.collator``: ``PackedMLMCollator``
* ``training.optim``: ``StableAdamW``; ``training.schedules``: ``WSDSchedule``, ``BatchSizeWarmup``
* ``training.trainer``: ``RexBertTrainer``; ``training.mfu``: ``measure_peak_flops``, ``MlmFlops``

See docs/training.md.
"""
