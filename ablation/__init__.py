"""Ablation studies of the RexBERT recipe: ``rexbert ablate --config experiments/<name>.yaml``.

config.py (the study file) · heldout.py (train / held-out split) · variants.py (RexBERT arms) ·
baseline.py (the plain transformers MLM arm) · scoring.py (evaluation of a cell) · grid.py (resumable
cells) · report.py (tables, intervals, plots) · cli.py (the subcommand).
"""
