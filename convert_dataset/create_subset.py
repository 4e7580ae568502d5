"""Build the YFCC14M caption list (file, caption) from the YFCC100M metadata DB and CLIP's subset list.

    python convert_dataset/create_subset.py --input-dir . --output-dir . --subset yfcc100m_subset_data.tsv

Inputs: the YFCC100M metadata database ``yfcc100m_dataset.sql`` (SQLite, table ``yfcc100m_dataset``; taken from
``--input-dir`` or given with ``--db``) and CLIP's ``yfcc100m_subset_data.tsv`` (tab separated, header
``line photoid photo_hash``). The DB is only read (no rewriting in place). Rows are joined on ``photoid``; a row whose
``key`` column differs from the subset's hash is skipped and counted.

Output: ``<output-dir>/yfcc14m_dataset.tsv`` with the header ``file<TAB>caption``, where file is
``hash[0:3]/hash[3:6]/hash.jpg`` (the member path in the yfcc100m zips, without ``data/images/``) and caption is the
``description``: URL-unquoted ('+' is a space), HTML tags replaced by spaces, whitespace (newlines included)
collapsed; HTML entities are left to the tokenizer. The title is not used. Fields with quotes are CSV-quoted (as
pandas writes them); ``convert_yfcc14m.py`` reads either form.

``--subset-db PATH`` also writes an SQLite DB with only the TSV's rows (same table, columns and indexes), e.g.
``yfcc14m_db/yfcc100m_dataset.sql`` for ``python -m yfcc100m.convert_metadata yfcc14m_db ...``, so that only the
subset's images get downloaded.
"""

from __future__ import annotations

import argparse
import csv
import re
import sqlite3
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from the repository root

from tqdm import tqdm  # noqa: E402

from convert_dataset.tsv import read_tsv_columns  # noqa: E402
from utils.atomic_files import atomic_output  # noqa: E402
from utils.cli import add_debug_flag, run_cli  # noqa: E402
from utils.errors import UserError  # noqa: E402
from utils.overwrite import add_overwrite_flag, refuse_to_overwrite  # noqa: E402

TABLE = "yfcc100m_dataset"
OUTPUT_NAME = "yfcc14m_dataset.tsv"
_HTML_TAG = re.compile(r"<[^>]*>")
_PHOTO_HASH = re.compile(r"[0-9a-f]{32}")


def clean_caption(description: str | None) -> str:
    """URL-unquote (``+`` is a space), replace HTML tags by spaces, collapse whitespace (newlines included)."""
    text = urllib.parse.unquote_plus(description or "")
    return " ".join(_HTML_TAG.sub(" ", text).split())


def image_path(photo_hash: str) -> str:
    """The image's path inside the yfcc100m zips (after ``data/images/``)."""
    return f"{photo_hash[:3]}/{photo_hash[3:6]}/{photo_hash}.jpg"


def read_subset(path: Path) -> Iterator[tuple[int, str]]:
    """(photoid, photo_hash) for every row of CLIP's subset list; malformed rows raise UserError."""
    for where, (photoid, photo_hash) in read_tsv_columns(path, ["photoid", "photo_hash"]):
        if not photoid.isdigit():
            raise UserError(f"{where}: photoid {photoid!r} is not a number")
        if not _PHOTO_HASH.fullmatch(photo_hash):
            raise UserError(f"{where}: photo_hash {photo_hash!r} is not 32 lower-case hex digits")
        yield int(photoid), photo_hash


def open_db(db: Path) -> tuple[sqlite3.Connection, list[str]]:
    """Open the metadata DB read-only; return the connection and the table's column names."""
    if not db.is_file():
        raise UserError(f"YFCC100M metadata DB {db} not found (use --input-dir or --db)")
    conn = sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        columns = [row[1] for row in conn.execute(f"PRAGMA main.table_info({TABLE})")]
    except sqlite3.DatabaseError as e:
        raise UserError(f"{db} is not a readable SQLite database ({e})") from None
    if not columns:
        raise UserError(f"{db} has no table '{TABLE}'; is it the YFCC100M metadata DB (yfcc100m_dataset.sql)?")
    missing = {"photoid", "description"} - set(columns)
    if missing:
        raise UserError(f"{db}: table '{TABLE}' lacks the column(s) {sorted(missing)}")
    return conn, columns


def load_subset(conn: sqlite3.Connection, subset: Path) -> int:
    """Copy the subset list into a temporary table ``subset(photoid, hash)``; return its row count."""
    conn.execute("CREATE TEMP TABLE subset (photoid INTEGER PRIMARY KEY, hash TEXT NOT NULL)")
    try:
        conn.executemany("INSERT INTO temp.subset VALUES (?, ?)", read_subset(subset))
    except sqlite3.IntegrityError:
        raise UserError(f"{subset} lists a photoid twice") from None
    conn.commit()
    return conn.execute("SELECT COUNT(*) FROM temp.subset").fetchone()[0]


def write_captions(conn: sqlite3.Connection, has_key: bool, total: int, output: Path) -> dict[str, int]:
    """Join the subset with the DB and write the (file, caption) TSV; return counts for the summary."""
    key = 'd."key"' if has_key else "NULL"
    rows = conn.execute(
        f"SELECT s.hash, {key}, d.description FROM temp.subset AS s JOIN main.{TABLE} AS d ON d.photoid = s.photoid"
    )
    counts = {"written": 0, "hash mismatch": 0}
    with atomic_output(output) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(["file", "caption"])
        for photo_hash, db_key, description in tqdm(rows, total=total, unit="photo", desc="subset"):
            if db_key is not None and db_key != photo_hash:
                counts["hash mismatch"] += 1
                continue
            writer.writerow([image_path(photo_hash), clean_caption(description)])
            counts["written"] += 1
        if not counts["written"]:  # raised inside the block: no empty TSV is left
            raise UserError(f"none of the {total} subset photos is in the metadata DB with the subset's hash "
                            f"({counts['hash mismatch']} with another one): nothing written")
    return counts


def write_subset_db(conn: sqlite3.Connection, has_key: bool, output: Path) -> None:
    """Write a new SQLite DB holding the rows of the TSV (same table, schema and indexes)."""
    schema = conn.execute(
        "SELECT sql FROM main.sqlite_master WHERE tbl_name = ? AND sql IS NOT NULL ORDER BY type = 'index'", (TABLE,)
    ).fetchall()
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(output) as tmp:
        tmp.unlink(missing_ok=True)
        out = sqlite3.connect(tmp)
        out.execute(schema[0][0])  # CREATE TABLE
        out.commit()
        out.close()
        conn.execute("ATTACH DATABASE ? AS out", (str(tmp),))
        same_hash = 'WHERE d."key" IS NULL OR d."key" = s.hash' if has_key else ""
        conn.execute(
            f"INSERT INTO out.{TABLE} SELECT d.* FROM temp.subset AS s JOIN main.{TABLE} AS d "
            f"ON d.photoid = s.photoid {same_hash}"
        )
        conn.commit()
        conn.execute("DETACH DATABASE out")
        out = sqlite3.connect(tmp)
        for (sql,) in schema[1:]:  # CREATE INDEX, after the rows are in
            out.execute(sql)
        out.commit()
        out.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_debug_flag(parser)
    parser.add_argument("--input-dir", type=Path, default=Path("."), help="folder holding yfcc100m_dataset.sql")
    parser.add_argument("--output-dir", type=Path, default=Path("."), help=f"folder to write {OUTPUT_NAME} to")
    parser.add_argument("--subset", type=Path, required=True, help="CLIP's yfcc100m_subset_data.tsv")
    parser.add_argument("--db", type=Path, help="the metadata DB (default: <input-dir>/yfcc100m_dataset.sql)")
    parser.add_argument("--subset-db", type=Path, help="also write an SQLite DB with only the subset's rows here")
    add_overwrite_flag(parser, "the TSV and --subset-db")
    args = parser.parse_args(argv)

    db = args.db or args.input_dir / "yfcc100m_dataset.sql"
    if not args.subset.is_file():
        raise UserError(f"subset list {args.subset} not found (yfcc100m_subset_data.tsv from CLIP's data page)")
    if args.subset_db and args.subset_db.resolve() == db.resolve():
        raise UserError(f"--subset-db {args.subset_db} would overwrite the metadata DB; choose another path")
    refuse_to_overwrite([args.output_dir / OUTPUT_NAME, *([args.subset_db] if args.subset_db else [])],
                        "a subset list", args.overwrite)
    conn, columns = open_db(db)
    total = load_subset(conn, args.subset)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    output = args.output_dir / OUTPUT_NAME
    has_key = "key" in columns
    counts = write_captions(conn, has_key, total, output)
    missing = total - counts["written"] - counts["hash mismatch"]
    print(
        f"wrote {counts['written']} of {total} subset photos to {output}; skipped {missing} not in the DB "
        f"and {counts['hash mismatch']} whose DB key differs from the subset's hash"
    )
    if args.subset_db:
        write_subset_db(conn, has_key, args.subset_db)
        print(f"wrote the subset's rows of the metadata DB to {args.subset_db}")
    conn.close()


if __name__ == "__main__":
    run_cli(main)
