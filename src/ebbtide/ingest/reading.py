"""Turn a file of any `EventFormat` into one SQL relation of canonical text fields.

Readers never parse rows in Python: they describe a DuckDB scan (`read_csv`,
`read_parquet`) whose rows are the file's records, with the source columns renamed
``src_0 … src_n`` and the canonical fields as text. Rows DuckDB cannot split (wrong
field count, bad encoding) land in a rejects table with their raw line. Before any of
that, `inspect_source` looks at the first bytes so a file in the wrong format fails
fast, with the expected columns and the offending line in the message.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import re
from dataclasses import dataclass, replace
from pathlib import Path

import duckdb

from ebbtide.errors import InputFormatError
from ebbtide.ingest.formats import CANONICAL_FIELDS, CDNOW_MASTER, CDNOW_SAMPLE, EventFormat
from ebbtide.sql import quote_ident, quote_literal

#: Bytes read from the start of a file to check its format before the real scan.
PREFIX_BYTES = 1 << 16
#: A byte DuckDB splits lines on when a layout reads whole lines (it never occurs in text).
_LINE_DELIMITER = "\x01"
_GZIP_MAGIC = b"\x1f\x8b"
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class Source:
    """A file to ingest, with what was learnt from its first bytes."""

    path: Path
    compression: str  # "gzip" or "none"
    sha256: str
    first_lines: tuple[str, ...]
    mixed_line_endings: bool = False

    @property
    def first_line(self) -> str:
        return self.first_lines[0] if self.first_lines else ""


@dataclass(frozen=True, slots=True)
class ReaderQuery:
    """A DuckDB query yielding one row per record: ``src_*`` columns and canonical text.

    ``layout_error`` is a reason code when the layout itself is broken for that row
    (wrong field count in a whitespace file, invalid JSON) and NULL otherwise.
    ``raw_sql`` rebuilds the row's text from the ``src_*`` columns for quarantine.
    """

    sql: str
    params: dict[str, object]
    raw_sql: str
    rejects_table: str | None


def file_sha256(path: Path) -> str:
    """Hash the file's bytes: the identity that makes re-ingesting it a no-op."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def inspect_source(path: Path, fmt: EventFormat) -> Source:
    """Read the first bytes of `path` and reject files that cannot be in `fmt`.

    Raises
    ------
    InputFormatError
        When the file is missing, empty, binary, or (for Parquet) unreadable.
    """
    if not path.is_file():
        raise InputFormatError(f"{path}: no such file; check the path")
    with path.open("rb") as handle:
        magic = handle.read(2)
    compression = "gzip" if magic == _GZIP_MAGIC else "none"
    sha = file_sha256(path)
    if fmt.layout == "parquet":
        return Source(path, compression, sha, ())
    prefix = _read_prefix(path, compression)
    if not prefix.strip():
        raise InputFormatError(
            f"{path}: the file is empty; a {fmt.name} file has the columns {fmt.expected_columns}"
        )
    if b"\x00" in prefix:
        shown = prefix[:60].decode("utf-8", "backslashreplace")
        raise InputFormatError(
            f"{path}: this is a binary file, not {fmt.name} text with the columns"
            f" {fmt.expected_columns}. First bytes: {shown!r}"
        )
    text = _LINE_BREAK.split(prefix.decode("utf-8-sig", "replace"))
    if len(prefix) == PREFIX_BYTES and len(text) > 1:
        text = text[:-1]  # the prefix cut the last line short
    lines = tuple(line for line in text if line.strip())
    return Source(path, compression, sha, lines[:200], _mixed_line_endings(prefix))


def _mixed_line_endings(prefix: bytes) -> bool:
    """True when lines end in more than one way (LF, CRLF, CR), which DuckDB refuses."""
    crlf = prefix.count(b"\r\n")
    kinds = (crlf > 0) + (prefix.count(b"\n") > crlf) + (prefix.count(b"\r") > crlf)
    return kinds > 1


def normalise_line_endings(source: Source, directory: Path) -> Source:
    """Copy `source` with every line ending made LF; the copy keeps the original's hash."""
    target = directory / "normalised.txt"
    opener = gzip.open if source.compression == "gzip" else open
    carry = b""
    with opener(source.path, "rb") as src, target.open("wb") as out:
        for block in iter(lambda: src.read(1 << 20), b""):
            block = carry + block
            carry = b"\r" if block.endswith(b"\r") else b""
            if carry:
                block = block[:-1]
            out.write(block.replace(b"\r\n", b"\n").replace(b"\r", b"\n"))
        out.write(carry.replace(b"\r", b"\n"))
    return replace(source, path=target, compression="none", mixed_line_endings=False)


def _read_prefix(path: Path, compression: str) -> bytes:
    opener = gzip.open if compression == "gzip" else open
    try:
        with opener(path, "rb") as handle:
            return handle.read(PREFIX_BYTES)
    except (OSError, EOFError) as exc:
        raise InputFormatError(f"{path}: cannot be read as {compression} data ({exc})") from None


def resolve_format(
    fmt: EventFormat, source: Source, parquet_columns: tuple[str, ...] = ()
) -> EventFormat:
    """Fix what only the file can tell: header-named columns, the CDNOW variant.

    Raises
    ------
    InputFormatError
        When the header does not hold the columns the format needs.
    """
    if fmt.layout == "parquet":
        return _with_columns(fmt, parquet_columns, source, header_text=", ".join(parquet_columns))
    if fmt.layout == "jsonl":
        return fmt
    if fmt.layout == "whitespace" and fmt.name == CDNOW_MASTER.name:
        fmt = _cdnow_variant(source)
    if not fmt.header:
        return fmt
    header = _split_header(source.first_line, fmt)
    if fmt.columns is None:
        names = tuple(
            (name.split(":", 1)[0] if fmt.typed_header else name).strip() for name in header
        )
        return _with_columns(fmt, names, source, header_text=source.first_line)
    if tuple(h.strip().lower() for h in header) != tuple(c.lower() for c in fmt.columns):
        raise InputFormatError(
            f"{source.path}: not a {fmt.name} file. Expected the header"
            f" {','.join(fmt.columns)!r}; line 1 is {source.first_line[:200]!r}"
        )
    return fmt


def _cdnow_variant(source: Source) -> EventFormat:
    tokens = source.first_line.split()
    if tokens and tokens[0].lower() == "customer_id":
        return replace(CDNOW_MASTER, header=True)
    data_line = source.first_line
    return CDNOW_SAMPLE if len(data_line.split()) == len(CDNOW_SAMPLE.columns) else CDNOW_MASTER


def _with_columns(
    fmt: EventFormat, names: tuple[str, ...], source: Source, header_text: str
) -> EventFormat:
    missing = sorted({c for c in fmt.fields.values() if c not in names})
    if missing:
        raise InputFormatError(
            f"{source.path}: column(s) {', '.join(missing)} not found. The file has"
            f" {header_text[:200]!r}; map your columns with --user-col, --item-col, ..."
        )
    return replace(fmt, columns=names)


def _split_header(line: str, fmt: EventFormat) -> list[str]:
    if fmt.layout == "whitespace":
        return line.split()
    return next(csv.reader(io.StringIO(line), delimiter=fmt.delimiter), [])


def build_reader(fmt: EventFormat, source: Source, tag: str) -> ReaderQuery:
    """Describe the scan of `source` as SQL; `tag` makes its temp table names unique."""
    if fmt.layout == "csv":
        return _csv_reader(fmt, source, tag)
    if fmt.layout == "parquet":
        return _parquet_reader(fmt, source)
    return _line_reader(fmt, source, tag)


def _csv_reader(fmt: EventFormat, source: Source, tag: str) -> ReaderQuery:
    assert fmt.columns is not None
    columns = "{" + ", ".join(f"{quote_literal(c)}: 'VARCHAR'" for c in fmt.columns) + "}"
    rejects = f"ebbtide_rejects_{tag}"
    scan = (
        f"read_csv($path, columns={columns}, header={str(fmt.header).lower()},"
        f" delim=$delim, quote=$quote, escape=$quote, auto_detect=false,"
        " compression=$compression,"
        f" store_rejects=true, rejects_table='{rejects}', rejects_scan='{rejects}_scan')"
    )
    src = [f"{quote_ident(c)} AS src_{i}" for i, c in enumerate(fmt.columns)]
    fields = _field_exprs(fmt, {c: f"src_{i}" for i, c in enumerate(fmt.columns)})
    sql = f"SELECT {', '.join(src)}, NULL::VARCHAR AS layout_error, {fields} FROM {scan}"
    raw = (
        "concat_ws($delim, "
        + ", ".join(f"coalesce(src_{i}, '')" for i in range(len(fmt.columns)))
        + ")"
    )
    params = {
        "path": str(source.path),
        "delim": fmt.delimiter,
        "quote": fmt.quote,
        "compression": source.compression,
    }
    return ReaderQuery(sql, params, raw, rejects)


def _line_reader(fmt: EventFormat, source: Source, tag: str) -> ReaderQuery:
    """Whitespace-separated and JSON Lines files: DuckDB reads whole lines, SQL splits them."""
    rejects = f"ebbtide_rejects_{tag}"
    scan = (
        "read_csv($path, columns={'src_line': 'VARCHAR'}, header=false, delim=$line_delim,"
        f" quote='', escape='', auto_detect=false, compression=$compression,"
        f" store_rejects=true, rejects_table='{rejects}', rejects_scan='{rejects}_scan')"
    )
    params: dict[str, object] = {
        "path": str(source.path),
        "line_delim": _LINE_DELIMITER,
        "compression": source.compression,
    }
    skip = "1" if fmt.header else "0"
    if fmt.layout == "whitespace":
        assert fmt.columns is not None
        n = len(fmt.columns)
        columns = {c: f"tok[{i + 1}]" for i, c in enumerate(fmt.columns)}
        inner = (
            f"SELECT src_line, regexp_split_to_array(trim(src_line), '\\s+') AS tok FROM {scan}"
            " WHERE trim(src_line) <> ''"
        )
        layout_error = f"CASE WHEN len(tok) <> {n} THEN 'wrong_field_count' END"
        sql = (
            f"SELECT src_line, {layout_error} AS layout_error, {_field_exprs(fmt, columns)}"
            f" FROM ({inner} OFFSET {skip})"
        )
        return ReaderQuery(sql, params, "src_line", rejects)
    # JSON Lines: each mapped key is read with a bound JSON path.
    columns = {}
    for i, key in enumerate(sorted(set(fmt.fields.values()))):
        params[f"json_path_{i}"] = "$." + '"' + key.replace('"', '\\"') + '"'
        columns[key] = f"CASE WHEN is_object THEN json_extract_string(src_line, $json_path_{i}) END"
    inner = (
        "SELECT src_line, coalesce(CASE WHEN json_valid(src_line)"
        " THEN json_type(src_line) = 'OBJECT' END, false)"
        f" AS is_object FROM {scan} WHERE trim(src_line) <> ''"
    )
    layout_error = "CASE WHEN NOT is_object THEN 'malformed_json' END"
    fields = _field_exprs(fmt, columns)
    sql = f"SELECT src_line, {layout_error} AS layout_error, {fields} FROM ({inner})"
    return ReaderQuery(sql, params, "src_line", rejects)


def _parquet_reader(fmt: EventFormat, source: Source) -> ReaderQuery:
    assert fmt.columns is not None
    src = [f"CAST({quote_ident(c)} AS VARCHAR) AS src_{i}" for i, c in enumerate(fmt.columns)]
    fields = _field_exprs(fmt, {c: f"src_{i}" for i, c in enumerate(fmt.columns)})
    sql = (
        f"SELECT {', '.join(src)}, NULL::VARCHAR AS layout_error, {fields} FROM read_parquet($path)"
    )
    params: dict[str, object] = {"path": str(source.path)}
    pairs = []
    for i, c in enumerate(fmt.columns):
        params[f"name_{i}"] = c
        pairs.append(f"$name_{i}, src_{i}")
    return ReaderQuery(sql, params, f"json_object({', '.join(pairs)})::VARCHAR", None)


def _field_exprs(fmt: EventFormat, columns: dict[str, str]) -> str:
    """SELECT list of the canonical text fields (``f_user_id`` …), NULL where absent."""
    exprs = []
    for name in CANONICAL_FIELDS:
        if name in fmt.fields:
            expr = columns[fmt.fields[name]]
        elif name in fmt.constants:
            expr = quote_literal(fmt.constants[name])
        else:
            expr = "NULL::VARCHAR"
        exprs.append(f"{expr} AS f_{name}")
    return ", ".join(exprs)


def parquet_columns(con: duckdb.DuckDBPyConnection, path: Path) -> tuple[str, ...]:
    """Column names of a Parquet file, or a clear error if it is not one."""
    try:
        cursor = con.execute("SELECT * FROM read_parquet($path) LIMIT 0", {"path": str(path)})
    except duckdb.Error as exc:
        first = str(exc).splitlines()[0]
        raise InputFormatError(f"{path}: not a readable Parquet file ({first})") from None
    return tuple(column[0] for column in cursor.description)
