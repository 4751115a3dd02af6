"""Shared edges of the command line: CSV reading with row-numbered errors, JSON and tables.

Assumes UTF-8 CSV files with a header row; every error names the file, the line and the rule.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sealgrid.cli import CliError


@dataclass(frozen=True)
class Row:
    """One CSV data row with its line number in the file (the header is line 1)."""

    line: int
    values: dict[str, str]

    def where(self, path: Path) -> str:
        """Return ``FILE line N`` for error messages."""
        return f"{path.name} line {self.line}"


class RowErrors(CliError):
    """One or more rows broke rules; ``lines`` holds one message per broken rule."""

    def __init__(self, lines: Sequence[str]) -> None:
        self.lines = list(lines)
        super().__init__("\n".join(self.lines))


def read_rows(path: Path, columns: Sequence[str],
              either: Sequence[Sequence[str]] = ()) -> list[Row]:
    """Read a CSV file whose header has (at least) ``columns`` and, when ``either`` is given,
    every column of one of its groups (the first group is the current spelling; a later one an
    older spelling still accepted). Each row's values hold every named column the header has.

    Raises:
        CliError: the file is missing, unreadable, not UTF-8, or lacks a required column.
    """
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return list(_rows(path, handle, columns, either))
    except FileNotFoundError:
        raise CliError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise CliError(f"{path}: not a UTF-8 text file") from None
    except csv.Error as exc:
        raise CliError(f"{path}: not a valid CSV file ({exc})") from None
    except IsADirectoryError:
        raise CliError(f"{path}: is a directory, not a CSV file") from None
    except OSError as exc:
        raise CliError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def rows_of(path: Path, rows: Sequence[Row]) -> list[tuple[str, dict[str, str]]]:
    """``(FILE line N, values)`` of each row, as :mod:`sealgrid.frames` reads them."""
    return [(row.where(path), row.values) for row in rows]


def _rows(path: Path, handle: Any, columns: Sequence[str],
          either: Sequence[Sequence[str]]) -> Iterator[Row]:
    reader = csv.DictReader(handle)
    header = [h.strip() for h in (reader.fieldnames or [])]
    group = next((g for g in either if all(c in header for c in g)), None)
    wanted = list(columns) + list(either[0] if either else ())
    missing = [c for c in wanted if c not in header]
    if missing and (group is None or any(c not in header for c in columns)):
        raise CliError(
            f"{path.name}: missing column(s) {', '.join(missing)}; "
            f"the header must name {','.join(wanted)}"
        )
    columns = [*columns, *(c for g in either for c in g if c in header)]
    reader.fieldnames = header
    for record in reader:
        line = reader.line_num
        if not any((v or "").strip() for v in record.values() if isinstance(v, str)):
            continue  # blank line
        values = {c: (record.get(c) or "").strip() for c in columns}
        if None in record:  # more fields than the header names
            values["__extra__"] = "1"
        yield Row(line, values)


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (a usage error otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def share(text: str) -> float:
    """An argparse type: a share between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must lie between 0 and 1, not {text}")
    return value


def servers(text: str) -> int:
    """An argparse type: the number of MPC servers, odd and at least 3 (honest majority)."""
    value = positive_int(text)
    if value < 3 or value % 2 == 0:
        raise argparse.ArgumentTypeError(f"the secure clearing needs an odd number of servers, "
                                         f"at least 3, not {value}")
    return value


def print_json(document: object) -> None:
    """Print one JSON document on stdout."""
    json.dump(document, sys.stdout, indent=None, separators=(", ", ": "))
    sys.stdout.write("\n")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print a plain aligned text table on stdout."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for n, row in enumerate(cells):
        print("  ".join(c.rjust(w) if n and _numeric(c) else c.ljust(w)
                        for c, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    if value is None:
        return "-"
    return str(value)


def _numeric(text: str) -> bool:
    return text.replace(",", "").replace(".", "").replace("-", "").isdigit()
