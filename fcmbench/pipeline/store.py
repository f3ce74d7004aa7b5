"""The results store: SQLite in WAL mode, one transaction per finished item."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from fcmbench.core import failpoints
from fcmbench.core.errors import FcmbenchError
from fcmbench.core.timestamps import now

SCHEMA = """
CREATE TABLE IF NOT EXISTS setups (
    setup TEXT PRIMARY KEY, dataset TEXT, task_model TEXT, description TEXT);
CREATE TABLE IF NOT EXISTS items (
    setup TEXT, method TEXT, rate TEXT, image_id INTEGER,
    rate_value REAL, pixels INTEGER, bytes INTEGER, bytes_per_level TEXT,
    encode_s REAL, decode_s REAL, front_s REAL, back_s REAL, predictions TEXT, finished_at TEXT,
    stream_info TEXT, PRIMARY KEY (setup, method, rate, image_id));
CREATE TABLE IF NOT EXISTS evaluations (
    setup TEXT, method TEXT, rate TEXT, image_set TEXT, rate_value REAL, n_images INTEGER,
    bits INTEGER, pixels INTEGER, metrics TEXT, evaluated_at TEXT, matches BLOB,
    PRIMARY KEY (setup, method, rate, image_set));
CREATE TABLE IF NOT EXISTS producers (
    setup TEXT, method TEXT, rate TEXT, identity TEXT, PRIMARY KEY (setup, method, rate));
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, setup TEXT, started_at TEXT, provenance TEXT);
"""

DB_NAME = "results.sqlite"


@dataclass
class ItemResult:
    method: str
    rate: str
    image_id: int
    rate_value: float
    pixels: int
    bytes: int
    bytes_per_level: dict[str, int]
    encode_s: float
    decode_s: float
    front_s: float
    back_s: float
    predictions: list[dict]
    stream_info: dict = field(default_factory=dict)  # the encoder's recorded choices (MFIBA's qualities)


def image_set_key(image_ids: list[int]) -> str:
    return hashlib.sha256(json.dumps(sorted(image_ids)).encode()).hexdigest()[:16]


class Store:
    def __init__(self, folder: Path, create: bool = True) -> None:
        self.path = Path(folder) / DB_NAME
        if not create and not self.path.is_file():
            raise FcmbenchError(f"no results in {folder} (missing {DB_NAME}); run `fcmbench run --out {folder}` first")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise FcmbenchError(f"results folder {folder} cannot be created ({err.strerror}): give --out a folder "
                                "you can write to") from None
        if self.path.exists() and not self.path.is_file():
            raise FcmbenchError(f"{self.path} is not a file: remove it or give another --out folder")
        try:
            self.db = sqlite3.connect(self.path)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.executescript(SCHEMA)
            self._add_missing_columns()
        except sqlite3.DatabaseError as err:
            raise FcmbenchError(f"results store {self.path} is not a readable SQLite file: {err}") from None

    def _add_missing_columns(self) -> None:
        """Stores written before ``stream_info`` or ``matches`` existed gain the column (empty for their rows;
        an evaluation without matches is redone by the next run, which computes no item again)."""
        for table, column, kind in (("items", "stream_info", "TEXT"), ("evaluations", "matches", "BLOB")):
            columns = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
            if column not in columns:
                with self.db:
                    self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    def close(self) -> None:
        self.db.close()

    def add_setup(self, dataset: str, task_model: str, description: dict) -> str:
        """A setup is one dataset + task model (+ weights, preprocessing); its id keys every item."""
        text = json.dumps(description, sort_keys=True)
        setup = hashlib.sha256(text.encode()).hexdigest()[:16]
        with self.db:
            self.db.execute("INSERT OR IGNORE INTO setups VALUES (?, ?, ?, ?)", (setup, dataset, task_model, text))
        return setup

    def add_run(self, setup: str, provenance: dict) -> None:
        with self.db:
            self.db.execute("INSERT INTO runs (setup, started_at, provenance) VALUES (?, ?, ?)",
                            (setup, now(), json.dumps(provenance, sort_keys=True)))

    def producer(self, setup: str, method: str, rate: str) -> str | None:
        """The identity of the codec that made the stored results of this rate point (None: not recorded)."""
        row = self.db.execute("SELECT identity FROM producers WHERE setup=? AND method=? AND rate=?",
                              (setup, method, rate)).fetchone()
        return row[0] if row else None

    def set_producer(self, setup: str, method: str, rate: str, identity: str) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO producers VALUES (?, ?, ?, ?)", (setup, method, rate, identity))

    def stored_rates(self, setup: str, method: str) -> set[str]:
        rows = self.db.execute("SELECT DISTINCT rate FROM producers WHERE setup=? AND method=? UNION "
                               "SELECT DISTINCT rate FROM items WHERE setup=? AND method=?", (setup, method) * 2)
        return {rate for (rate,) in rows}

    def forget(self, setup: str, method: str, rate: str) -> None:
        """Drop a rate point's items, evaluations and producer (to recompute it, or because it is gone)."""
        with self.db:
            for table in ("items", "evaluations", "producers"):
                self.db.execute(f"DELETE FROM {table} WHERE setup=? AND method=? AND rate=?", (setup, method, rate))

    def finished(self, setup: str) -> set[tuple[str, str, int]]:
        rows = self.db.execute("SELECT method, rate, image_id FROM items WHERE setup = ?", (setup,))
        return {(m, r, i) for m, r, i in rows}

    def add_item(self, setup: str, item: ItemResult) -> None:
        with self.db:  # one transaction: an item is either fully recorded or absent
            self.db.execute(
                "INSERT OR REPLACE INTO items (setup, method, rate, image_id, rate_value, pixels, bytes, "
                "bytes_per_level, encode_s, decode_s, front_s, back_s, predictions, finished_at, stream_info) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (setup, item.method, item.rate, item.image_id, item.rate_value, item.pixels, item.bytes,
                 json.dumps(item.bytes_per_level), item.encode_s, item.decode_s, item.front_s, item.back_s,
                 json.dumps(item.predictions), now(), json.dumps(item.stream_info)))
            failpoints.reached("store-transaction")

    def items(self, setup: str, method: str, rate: str, image_ids: list[int]) -> list[dict]:
        rows = self.db.execute(
            "SELECT image_id, pixels, bytes, predictions FROM items WHERE setup=? AND method=? AND rate=?",
            (setup, method, rate))
        wanted = set(image_ids)
        return [dict(image_id=i, pixels=p, bytes=b, predictions=json.loads(pr)) for i, p, b, pr in rows if i in wanted]

    def has_evaluation(self, setup: str, method: str, rate: str, image_set: str) -> bool:
        """Evaluated, with the matching the bootstrap resamples (an empty blob: the dataset gives none)."""
        row = self.db.execute("SELECT 1 FROM evaluations WHERE setup=? AND method=? AND rate=? AND image_set=? "
                              "AND matches IS NOT NULL", (setup, method, rate, image_set)).fetchone()
        return row is not None

    def add_evaluation(self, setup: str, method: str, rate: str, image_set: str, rate_value: float,
                       n_images: int, bits: int, pixels: int, metrics: dict[str, float], matches: bytes = b"") -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO evaluations (setup, method, rate, image_set, rate_value, "
                            "n_images, bits, pixels, metrics, evaluated_at, matches) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            (setup, method, rate, image_set, rate_value, n_images, bits, pixels,
                             json.dumps(metrics), now(), matches))

    def query(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        self.db.row_factory = sqlite3.Row
        try:
            return self.db.execute(sql, params).fetchall()
        finally:
            self.db.row_factory = None
