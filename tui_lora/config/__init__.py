"""The run file: schema, loading with overrides, validation, and writing.

Nothing here imports torch or the Hugging Face libraries: `tui-lora validate`
and the wizard's first screens depend on that.
"""

from __future__ import annotations

from pathlib import Path

from tui_lora.config.load import (ConfigError, ConfigIssue, apply_overrides, attribute_overrides, build_config,
                                  config_to_dict, override_origins, read_toml)
from tui_lora.config.rules import check_rules
from tui_lora.config.schema import RunConfig
from tui_lora.config.write import save_run_file, to_toml

__all__ = ["ConfigError", "ConfigIssue", "RunConfig", "check_rules", "config_from_dict", "config_to_dict",
           "load_run_file", "save_run_file", "to_toml"]


def config_from_dict(raw: dict, overrides: list[str] = (), source: str = "") -> RunConfig:
    """Typed, validated config from parsed TOML; ConfigError lists every problem found.

    A problem with a key given through --set is reported as coming from --set, not from the file.
    """
    overrides = list(overrides)
    config, issues = build_config(apply_overrides(raw, overrides))
    if not issues:
        issues = check_rules(config)
    if issues:
        raise ConfigError(attribute_overrides(issues, override_origins(raw, overrides)), source)
    return config


def load_run_file(path: str | Path, overrides: list[str] = ()) -> RunConfig:
    path = Path(path)
    return config_from_dict(read_toml(path), overrides, source=str(path))
