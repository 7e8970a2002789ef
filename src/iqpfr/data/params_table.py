"""The ``params.csv`` / ``params.json`` tables written next to synthesised LQ images.

Rows are keyed by ``file`` (relative output path); a new run merges into the existing tables, so
resumed or incremental runs never lose earlier rows. Both files are written atomically.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from iqpfr.utils.fs import atomic_write_text


def read_params_table(out_dir: str | Path) -> list[dict[str, Any]]:
    """Rows of ``out_dir/params.json`` (empty list if absent)."""
    path = Path(out_dir) / "params.json"
    if not path.exists():
        return []
    return list(json.loads(path.read_text(encoding="utf-8")))


def merge_params_tables(out_dir: str | Path, rows: list[dict[str, Any]]) -> None:
    """Merge ``rows`` (replacing rows of the same ``file``) and rewrite params.json and params.csv."""
    out_dir = Path(out_dir)
    merged = {row["file"]: row for row in read_params_table(out_dir)}
    merged.update({row["file"]: row for row in rows})
    ordered = [merged[key] for key in sorted(merged)]
    atomic_write_text(out_dir / "params.json", json.dumps(ordered, indent=1) + "\n")
    columns: list[str] = []
    for row in ordered:
        columns.extend(k for k in row if k not in columns)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in ordered:
        writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in row.items()})
    atomic_write_text(out_dir / "params.csv", buf.getvalue())
