"""Where models and data come from: the official hub, a mirror, or the local cache only.

huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE once, when it is first imported,
so the environment is set here before anything imports it; setting it later does nothing.
"""

from __future__ import annotations

import os
import sys

from tui_lora.config.schema import HubSettings


def apply_hub_environment(settings: HubSettings) -> str:
    """Set the hub environment; returns a warning when it came too late to take effect, else ""."""
    late = "huggingface_hub" in sys.modules and (settings.endpoint or settings.offline)
    if settings.endpoint:
        os.environ["HF_ENDPOINT"] = settings.endpoint.rstrip("/")
    if settings.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
    return ("hub settings were applied after huggingface_hub was imported in this process; "
            "they may not take effect" if late else "")
