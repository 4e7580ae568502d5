"""Tab-separated files with a header line (the YFCC subset list, the caption TSV): rows checked, one-line errors."""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path

from utils.errors import UserError


def read_tsv_columns(path: Path, columns: Sequence[str]) -> Iterator[tuple[str, list[str]]]:
    """Yield ``(where, values)`` for every row: ``where`` names the file and line for messages, ``values`` holds the
    row's fields of ``columns`` in that order. The header must name every one of ``columns`` (extra columns are
    allowed); a row with another number of fields than the header is a UserError."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader, [])
        if any(name not in header for name in columns):
            wanted = " and ".join(f"'{name}'" for name in columns)
            raise UserError(f"{path}: expected a header with the columns {wanted}, got {header}")
        index = [header.index(name) for name in columns]
        for row in reader:
            where = f"{path} line {reader.line_num}"
            if len(row) != len(header):
                raise UserError(f"{where}: expected {len(header)} tab-separated columns, got {len(row)}")
            yield where, [row[i] for i in index]
