"""Presets: the bundled run files and the user's own, found by name, described, and resolved to a file.

A name on the command line or in the wizard may be a path to a .toml file, the name of one of the
user's presets (XDG_CONFIG_HOME/tui-lora/presets), the name of a bundled one (presets/ in the
package), or a run folder, which stands for its run.toml. Standard library only, plus the config
loader when a preset is read: the wizard lists presets at start-up.
"""

from __future__ import annotations

import re
from pathlib import Path

from tui_lora.errors import UserError, first_line
from tui_lora.places import APP, base_dir, display_path

# ASCII only: a name is a file name, and macOS may hand back accented names in another Unicode
# form than the one typed, so a preset saved as "é" would not be found by that name again.
PRESET_NAME = re.compile(r"[A-Za-z0-9._-]+")
ALLOWED = "use letters, digits, '.', '_' and '-', not starting with '.'"


def user_presets_dir() -> Path:
    """The folder of the user's own presets; it is made only when the first one is saved."""
    return base_dir("XDG_CONFIG_HOME", ".config") / APP / "presets"


def user_presets() -> dict[str, Path]:
    """The user's own presets, name -> file, sorted by name; empty when there are none."""
    found = sorted(path for path in user_presets_dir().glob("*.toml")
                   if not path.name.startswith(".") and path.is_file())
    return {path.stem: path for path in found}


def preset_path(name: str) -> Path:
    """Where the preset called name is saved; "NAME.toml" means the same as "NAME"."""
    stem = name.removesuffix(".toml")
    if not stem:
        raise UserError(f"a preset needs a name: {ALLOWED}")
    if "/" in stem or "\\" in stem:  # a separator on one system or another
        raise UserError(f"preset name {name!r}: a name, not a path; {ALLOWED}")
    if stem.startswith(".") or not PRESET_NAME.fullmatch(stem):
        raise UserError(f"preset name {name!r}: {ALLOWED}")
    return user_presets_dir() / f"{stem}.toml"


def presets_dir() -> Path:
    """Bundled presets: bundled_presets/ inside an installed package (the wheel puts them there; a folder
    called presets/ would sit beside this module), or presets/ beside the package in a source checkout."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "bundled_presets", package.parent / "presets"):
        if candidate.is_dir():
            return candidate
    return package / "bundled_presets"


def bundled_presets() -> dict[str, Path]:
    return {path.stem: path for path in sorted(presets_dir().glob("*.toml"))}


def resolve_preset(name: str) -> Path:
    """A run file path, or a preset's name: the user's own (`places.user_presets_dir`), then the bundled ones.

    The user's own wins a clash of names: it is the one they made or edited on purpose.
    """
    path = Path(name).expanduser()
    if path.exists() or path.suffix == ".toml":
        return path
    found = all_presets()
    if name in found:
        return found[name]
    raise UserError(f"{name}: no such run file or preset; bundled presets are "
                    f"{', '.join(bundled_presets()) or 'none'}; yours ({display_path(user_presets_dir())}) are "
                    f"{', '.join(user_presets()) or 'none yet'}")


def run_file_of(name: str) -> Path:
    """resolve_preset, and a run folder stands for its run.toml: the resolved run file it was started with,
    --set overrides included, so `tui-lora run RUN_FOLDER --resume` continues the run as it was (like attach,
    chat, eval and merge, which take the folder too)."""
    path = resolve_preset(name)
    if path.is_dir() and (path / "run.toml").is_file():
        return path / "run.toml"
    return path


def all_presets() -> dict[str, Path]:
    """Every preset by name, the user's own replacing a bundled one of the same name."""
    return {**bundled_presets(), **user_presets()}


def preset_description(path: Path) -> str:
    """A preset's top-level description; a hand-edited file that does not parse says so instead."""
    import tomllib

    try:
        with open(path, "rb") as handle:
            description = tomllib.load(handle).get("description", "")
    except (OSError, ValueError) as exc:
        return f"(cannot read it: {first_line(exc)})"
    return description if isinstance(description, str) else ""


def load_preset(name: str, overrides: list[str] = ()):
    """The validated config of the run file `name` stands for (resolve_preset, run_file_of), --set applied.

    A run folder's run.toml must train into that folder: a moved copy would resume or train elsewhere.
    """
    from tui_lora.config import load_run_file

    run_file = run_file_of(name)
    config = load_run_file(run_file, list(overrides))
    if run_file.name == "run.toml" and run_file.parent.is_dir() and run_file != resolve_preset(name):
        _same_folder(run_file.parent, config)
    return config


def _same_folder(folder: Path, config) -> None:
    """A run folder given for its run.toml must be the folder that run.toml trains into (not a moved copy)."""
    recorded = Path(config.training.output_dir).expanduser()
    if recorded.absolute() != folder.absolute() and not (recorded.exists() and recorded.samefile(folder)):
        raise UserError(f"{folder}: its run.toml trains into {recorded} (training.output_dir), not this folder; "
                        f"was the folder moved? Give {recorded}, or move the folder back")
