"""Pieces every RexBERT stage shares: the user-error type the CLIs report, and the YAML config loader."""

from rexbert_common.config import ConfigError, checked, config_from_dict, config_to_dict, load_config
from rexbert_common.errors import UserError

__all__ = ["ConfigError", "UserError", "checked", "config_from_dict", "config_to_dict", "load_config"]
