"""Subcommands registered beside the ones in cli.py: pretraining, export, retrieval and serving."""

from __future__ import annotations

from typing import Any, Callable

REGISTRARS: list[Callable[[Any], None]] = []
