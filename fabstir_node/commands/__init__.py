"""Operator commands behind ``fabstir-node publish`` and ``fabstir-node search``."""

import argparse
import textwrap


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions are wrapped paragraphs; epilogs (examples) are printed as written."""


def paragraph(text: str, width: int = 88) -> str:
    """One help paragraph, wrapped for a terminal (argparse would print a raw description as one line)."""
    return textwrap.fill(" ".join(text.split()), width=width)
