"""RexBERT encoder: configuration, models, Auto-class registration and ModernBERT conversion.

``import modeling_rexbert`` registers ``model_type="rexbert"`` with ``AutoConfig``, ``AutoModel``,
``AutoModelForMaskedLM``, ``AutoModelForSequenceClassification`` and
``AutoModelForTokenClassification``, marks every class for remote-code export so that
``save_pretrained`` copies the code files and writes a complete ``auto_map``, and gives the ``sdpa``
backend and the sparse MLM loss their CPU scheduling (``sdpa_cpu.py``, ``cross_entropy_cpu.py``;
remote-code copies keep the shipped code) and lets
``RexBertConfig`` read ModernBERT configs (``conversion.py``).
"""

from __future__ import annotations

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)

from . import conversion, cross_entropy_cpu, sdpa_cpu
from .attention_rexbert import ATTENTION_BACKENDS
from .configuration_rexbert import SIZE_PRESETS, RexBertConfig
from .conversion import export_to_modernbert, modernbert_to_rexbert_dict, rexbert_config_to_modernbert
from .modeling_rexbert import (
    RexBertForMaskedLM,
    RexBertForSequenceClassification,
    RexBertForTokenClassification,
    RexBertModel,
    RexBertPreTrainedModel,
)

_AUTO_CLASSES = (
    (AutoModel, RexBertModel),
    (AutoModelForMaskedLM, RexBertForMaskedLM),
    (AutoModelForSequenceClassification, RexBertForSequenceClassification),
    (AutoModelForTokenClassification, RexBertForTokenClassification),
)


def _register() -> None:
    AutoConfig.register(RexBertConfig.model_type, RexBertConfig, exist_ok=True)
    RexBertConfig.register_for_auto_class()
    for auto_cls, model_cls in _AUTO_CLASSES:
        auto_cls.register(RexBertConfig, model_cls, exist_ok=True)
        model_cls.register_for_auto_class(auto_cls.__name__)


_register()
sdpa_cpu.register()
cross_entropy_cpu.register()
conversion.register()

__all__ = [
    "ATTENTION_BACKENDS",
    "SIZE_PRESETS",
    "RexBertConfig",
    "RexBertForMaskedLM",
    "RexBertForSequenceClassification",
    "RexBertForTokenClassification",
    "RexBertModel",
    "RexBertPreTrainedModel",
    "export_to_modernbert",
    "modernbert_to_rexbert_dict",
    "rexbert_config_to_modernbert",
]
