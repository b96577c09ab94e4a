"""tui-lora: LoRA and QLoRA fine-tuning of chat models, from a terminal wizard or a TOML run file."""

__version__ = "0.1.0"
