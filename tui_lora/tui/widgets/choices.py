"""A set of radio buttons that says which one is chosen in words too, for terminals without colour."""

from __future__ import annotations

from textual.widgets import RadioButton, RadioSet

CHOSEN = "  ✓"


def mark_chosen(choices: RadioSet) -> None:
    """Give the pressed button a ✓ after its label and take it off the others (NO_COLOR shows no dot colour)."""
    for button in choices.query(RadioButton):
        label = str(button.label).removesuffix(CHOSEN)
        wanted = label + CHOSEN if button.value else label
        if str(button.label) != wanted:
            button.label = wanted
