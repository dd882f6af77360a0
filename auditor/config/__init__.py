"""Config: typed models and the YAML loader."""

from auditor.config.loader import load_config
from auditor.config.model import Config, PiiRule, ReferenceRule

__all__ = ["Config", "PiiRule", "ReferenceRule", "load_config"]
