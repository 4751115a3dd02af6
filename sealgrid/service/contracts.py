"""Which supplier and region each household belongs to: ``households.csv`` or round-robin.

``sealgrid init --households-csv FILE`` reads a UTF-8 CSV file with the header
``household,supplier,region`` (in any order, nothing else) and one household per row; without
it, households ``h0001 …`` are assigned round-robin over the default suppliers and regions
(:func:`round_robin`). Every error names the file, the line (the header is line 1) and the
rule broken, in the style of ``sealgrid settle``'s files: ``FILE line N: rule: detail``.
Pure apart from reading the file.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sealgrid.service.keys import DEFAULT_REGIONS, DEFAULT_SUPPLIERS, DataDirError, id_problem

COLUMNS = ("household", "supplier", "region")


class ContractsError(DataDirError):
    """The households file breaks a rule; ``lines`` holds one message per broken rule."""

    def __init__(self, lines: Sequence[str]) -> None:
        self.lines = list(lines)
        super().__init__("\n".join(self.lines))


@dataclass(frozen=True)
class Assignment:
    """One household's supplier and region (a row of ``households.csv``)."""

    household: str
    supplier: str
    region: str


def round_robin(
    count: int,
    suppliers: Sequence[str] = DEFAULT_SUPPLIERS,
    regions: Sequence[str] = DEFAULT_REGIONS,
) -> list[Assignment]:
    """Households ``h0001 … h{count}``: household ``i`` gets ``suppliers[(i-1) % S]`` and
    ``regions[(i-1) % R]`` (with the defaults, 3 suppliers and 2 regions, every pair occurs
    once in six households).

    Raises:
        ValueError: a negative count, or no supplier or region to assign.
    """
    if count < 0:
        raise ValueError("the number of households must not be negative")
    if count and (not suppliers or not regions):
        raise ValueError("round-robin needs at least one supplier and one region")
    s, r = len(suppliers), len(regions)
    return [
        Assignment(f"h{i:04d}", suppliers[(i - 1) % s], regions[(i - 1) % r])
        for i in range(1, count + 1)
    ]


def read_households_csv(path: Path) -> list[Assignment]:
    """Read ``household,supplier,region`` rows, in file order.

    Rules (named in each error): ``missing_header`` (an empty file, or a first line naming
    none of the columns), ``unknown_column``,
    ``missing_column``, ``duplicate_column``, ``extra_field`` (more fields than the header),
    ``empty_field``, ``bad_id`` (ids are letters, digits, ``.``, ``_``, ``-``, at most 64;
    a household's must not end with ``.meter``), ``duplicate_household``, ``no_households``.
    Blank lines are skipped.

    Raises:
        ContractsError: the file is unreadable or breaks a rule (every broken row named).
    """
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            return _read(path, list(csv.reader(handle)))
    except FileNotFoundError:
        raise ContractsError([f"{path}: no such file"]) from None
    except IsADirectoryError:
        raise ContractsError([f"{path}: is a directory, not a CSV file"]) from None
    except UnicodeDecodeError:
        raise ContractsError([f"{path}: not a UTF-8 text file"]) from None
    except (OSError, csv.Error) as exc:
        raise ContractsError([f"{path}: cannot read it as CSV ({exc})"]) from None


def _read(path: Path, records: list[list[str]]) -> list[Assignment]:
    name = path.name
    rule = f"the header must be {','.join(COLUMNS)}"
    if not records or not any(c.strip() for c in records[0]):
        raise ContractsError([f"{name} line 1: missing_header: {rule}"])
    header = [c.strip() for c in records[0]]
    if not any(c in COLUMNS for c in header):
        first = ",".join(header)
        raise ContractsError([f"{name} line 1: missing_header: {rule} (found {first!r})"])
    errors = [f"{name} line 1: unknown_column: {c!r} ({rule})" for c in header if c not in COLUMNS]
    errors += [
        f"{name} line 1: duplicate_column: {c!r} appears twice"
        for i, c in enumerate(header)
        if c in COLUMNS and c in header[:i]
    ]
    errors += [f"{name} line 1: missing_column: {c!r} ({rule})" for c in COLUMNS if c not in header]
    if errors:
        raise ContractsError(errors)
    where = {c: header.index(c) for c in COLUMNS}
    found: list[Assignment] = []
    first_line: dict[str, int] = {}
    for line, record in enumerate(records[1:], start=2):
        cells = [c.strip() for c in record]
        if not any(cells):
            continue
        at = f"{name} line {line}"
        if len(cells) > len(header):
            errors.append(f"{at}: extra_field: {len(cells)} fields, the header names {len(header)}")
            continue
        values = {c: cells[i] if i < len(cells) else "" for c, i in where.items()}
        empty = [c for c in COLUMNS if not values[c]]
        if empty:
            errors.append(f"{at}: empty_field: {', '.join(empty)} must not be empty")
            continue
        bad = [
            problem
            for c in COLUMNS
            if (problem := id_problem(values[c], household=c == "household")) is not None
        ]
        if bad:
            errors += [f"{at}: bad_id: {problem}" for problem in bad]
            continue
        household = values["household"]
        if household in first_line:
            errors.append(
                f"{at}: duplicate_household: {household!r} is already on line "
                f"{first_line[household]}"
            )
            continue
        first_line[household] = line
        found.append(Assignment(household, values["supplier"], values["region"]))
    if not errors and not found:
        errors.append(f"{name} line 2: no_households: the file lists no household")
    if errors:
        raise ContractsError(errors)
    return found
