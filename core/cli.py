"""Command-line help shared by every entry point: each option says its default once."""
from __future__ import annotations

import argparse


def not_shown(default) -> bool:
    """A default that means "not given" and is not worth printing."""
    return default is None or default is False or (isinstance(default, (list, tuple, str)) and not default)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends "(default: X)" to an option's help unless the help already says its default or
    there is none worth showing (None, False, an empty list: the option is simply off unless given)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text.lower() or not_shown(action.default):
            return text
        return super()._get_help_string(action)

    def _format_text(self, text: str) -> str:
        return super()._format_text(text.replace("``", "`"))  # module docstrings' reST literals


class RawHelpFormatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """The same, keeping the description's own line breaks (tables, command examples)."""
