"""Errors that recstack raises on bad input. Each message names what was wrong and where."""

from __future__ import annotations


class RecstackError(Exception):
    """Base class of recstack's documented errors."""


class ConfigError(RecstackError, ValueError):
    """A configuration value is missing, unknown or invalid; the message names the key."""


class SchemaError(RecstackError, ValueError):
    """A feature schema is inconsistent; the message names the feature and the problem."""


class DataError(RecstackError, ValueError):
    """A data file does not match the schema.

    The message names the file, the row (1-based data row, header excluded) when known,
    the column, the feature and what was expected.
    """

    def __init__(
        self,
        problem: str,
        *,
        path: str | None = None,
        row: int | None = None,
        column: str | None = None,
        feature: str | None = None,
    ) -> None:
        self.problem = problem
        self.path = path
        self.row = row
        self.column = column
        self.feature = feature
        where = []
        if path is not None:
            where.append(f"file {path!r}")
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column {column!r}")
        if feature is not None and feature != column:
            where.append(f"feature {feature!r}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {problem}" if prefix else problem)


class RunFolderError(RecstackError):
    """A run folder is missing, incomplete or damaged, or cannot be written as asked; the message
    names the folder or file and what is wrong."""
