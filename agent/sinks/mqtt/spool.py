"""Store-and-forward spool: every outgoing message is committed to SQLite (WAL) before the
connection thread hands it to paho, and deleted only when the broker acknowledges it.

A committed row survives kill -9 (WAL, ``synchronous=NORMAL``; ``FULL`` also survives power
loss). The spool is bounded by bytes and by age per class. When a new message does not fit,
older messages are evicted in this order (a message may only evict classes ranked at or
below its own; otherwise the new message itself is dropped)::

    1. frame     oldest first                (rank 0)
    2. health    thinned: every second one of the oldest half is deleted, so an outage
                 stays covered at half the time resolution (rank 1)
    3. response  oldest first                (rank 2)
    4. event     oldest first                (rank 3)
    5. health    oldest first, when thinning cannot free more
    6. status    oldest first                (rank 4; retained statuses are coalesced anyway)

Every drop is counted by class and by cause (cap, age, too_large, broker_rejected) in a
table of the spool itself, so counts survive restarts and reach the next health summary.
A retained status replaces any queued status on the same topic ("superseded", not a drop).

One process owns a spool: ``<spool>.lock`` is flock-ed while it is open, and a second agent
opening the same file gets a ConfigError naming the holder's pid (exit 78).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from agent.errors import ConfigError, PublishError
from agent.sinks.mqtt.config import SpoolConfig

__all__ = ["CLASSES", "OutMessage", "Spool", "SpoolRow"]

logger = logging.getLogger(__name__)

#: Message classes, lowest rank (dropped first) to highest (kept longest).
CLASSES: tuple[str, ...] = ("frame", "health", "response", "event", "status")
_RANK = {c: i for i, c in enumerate(CLASSES)}
#: Eviction steps: (class, how).
_PLAN: tuple[tuple[str, str], ...] = (
    ("frame", "oldest"),
    ("health", "thin"),
    ("response", "oldest"),
    ("event", "oldest"),
    ("health", "oldest"),
    ("status", "oldest"),
)
_SCHEMA = """
CREATE TABLE IF NOT EXISTS msgs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    cls TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    retain INTEGER NOT NULL,
    props TEXT NOT NULL,
    msg_id TEXT NOT NULL,
    created REAL NOT NULL,
    size INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS msgs_cls ON msgs(cls, id);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class OutMessage:
    """A message to publish (QoS 1). ``props``: content_type, user (list of [k, v]), correlation (hex)."""

    cls: str
    topic: str
    payload: bytes
    msg_id: str
    retain: bool = False
    props: dict[str, object] = field(default_factory=dict)
    created: float = 0.0

    def __post_init__(self) -> None:
        if self.cls not in _RANK:
            raise ValueError(f"message class must be one of {CLASSES}, but got {self.cls!r}")


@dataclass(frozen=True, slots=True)
class SpoolRow:
    """A stored message as read back for sending."""

    id: int
    cls: str
    topic: str
    payload: bytes
    retain: bool
    props: dict[str, object]
    msg_id: str
    created: float


#: A spool that fails with one of these may work after a restart (space freed, a disk back).
_TRANSIENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.ENOMEM, errno.EAGAIN})


def _unusable(path: Path, what: str, exc: OSError) -> ConfigError | PublishError:
    """The spool at ``path`` cannot ``what``: a full or failing disk is a runtime failure (a restart
    may help, exit 1); anything else (a folder this user cannot write, a read-only or virtual file
    system) is the config's to fix (exit 78: systemd does not restart it in a loop)."""
    reason = exc.strerror or str(exc)
    if exc.errno in _TRANSIENT_ERRNOS:
        return PublishError(f"the MQTT spool {path} cannot {what}: {reason} (free space on that disk, or point "
                            "mqtt.spool.path at another one)")
    return ConfigError(f"mqtt.spool.path {path}: cannot {what} ({reason}); point it at a folder this user can "
                       "write (leave it unset: the service's state directory under systemd, ./var otherwise)")


class Spool:
    """Bounded SQLite spool shared by producer threads (put) and the connection thread (fetch/ack)."""

    def __init__(self, path: Path, config: SpoolConfig, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.config = config
        self._clock = clock
        self._lock = threading.RLock()
        self._count = dict.fromkeys(CLASSES, 0)
        self._bytes = dict.fromkeys(CLASSES, 0)
        self._counters: dict[str, int] = {}
        self._closed = False
        self._lock_fd = self._claim(path)
        try:
            self._db = self._open(path)
            #: Id of the newest committed row (the connection thread polls it to see new work cheaply).
            self.last_id = self.max_id()
        except BaseException:
            os.close(self._lock_fd)
            raise

    # -- opening -------------------------------------------------------------------------
    @staticmethod
    def _claim(path: Path) -> int:
        """Hold ``<spool>.lock`` (flock) while open: two agent processes sharing one spool would each
        count the other's messages as their own, and ack and drop them."""
        lock = path.with_name(f"{path.name}.lock")
        if path.is_dir():
            raise ConfigError(f"mqtt.spool.path {path} is a folder; it names the spool's SQLite file")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        except (NotADirectoryError, FileExistsError) as exc:  # a file where a folder of the path should be
            raise ConfigError(
                f"mqtt.spool.path {path}: a part of it is a file, not a folder ({exc.strerror})"
            ) from None
        except OSError as exc:
            raise _unusable(path, f"create its lock file {lock.name}", exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            who = "this process (a spool not closed)" if holder == str(os.getpid()) else f"pid {holder}"
            raise ConfigError(
                f"the MQTT spool {path} is in use by another edge-guard process ({who}): each agent "
                "process needs its own spool; give each camera its own mqtt.node (the default spool file is "
                "named after it) or its own mqtt.spool.path"
            ) from None
        except OSError as exc:  # a file system without flock (ENOLCK, EOPNOTSUPP)
            os.close(fd)
            raise PublishError(f"cannot lock the MQTT spool {lock}: {exc.strerror or exc}; put mqtt.spool.path on "
                               "a local file system") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        except OSError as exc:
            os.close(fd)
            raise _unusable(path, f"write its lock file {lock.name}", exc) from None
        return fd

    def _open(self, path: Path) -> sqlite3.Connection:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = self._connect(path)
        except sqlite3.OperationalError as exc:  # cannot open (permissions, a full disk, a locked file): not corruption
            if path.exists() and not os.access(path, os.R_OK | os.W_OK):
                raise ConfigError(f"mqtt.spool.path {path}: this user cannot read and write the file ({exc}); "
                                  "fix its owner or point mqtt.spool.path elsewhere") from None
            raise PublishError(f"cannot open the MQTT spool {path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            # A corrupt spool must not stop the guard: keep it aside for forensics, start fresh.
            aside = path.with_name(f"{path.name}.corrupt-{int(self._clock())}")
            logger.error("spool %s is unreadable (%s); moved to %s and starting an empty spool", path, exc, aside)
            path.rename(aside)
            for suffix in ("-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            db = self._connect(path)
        except OSError as exc:
            raise _unusable(path, "create it", exc) from None
        for cls, n, size in db.execute("SELECT cls, COUNT(*), COALESCE(SUM(size), 0) FROM msgs GROUP BY cls"):
            if cls in _RANK:
                self._count[cls], self._bytes[cls] = int(n), int(size)
        self._counters = {str(k): int(v) for k, v in db.execute("SELECT name, value FROM counters")}
        if self.queued_msgs:
            logger.info("spool %s holds %d messages (%d bytes) from before", path, self.queued_msgs, self.queued_bytes)
        return db

    def _connect(self, path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self.config.synchronous.upper()}")
        db.executescript(_SCHEMA)
        db.execute("SELECT COUNT(*) FROM msgs").fetchone()  # surfaces a corrupt file here
        return db

    # -- totals ----------------------------------------------------------------------------
    @property
    def queued_msgs(self) -> int:
        return sum(self._count.values())

    @property
    def queued_bytes(self) -> int:
        return sum(self._bytes.values())

    def queued_by_class(self) -> dict[str, int]:
        with self._lock:
            return dict(self._count)

    def oldest_age_s(self) -> float | None:
        with self._lock:
            if self._closed:
                return None
            row = self._db.execute("SELECT created FROM msgs ORDER BY id LIMIT 1").fetchone()
        return None if row is None else max(0.0, self._clock() - float(row[0]))

    def counters(self) -> dict[str, int]:
        """Persistent counters: ``drop.<class>``, ``cause.<cause>``, ``superseded``."""
        with self._lock:
            return dict(self._counters)

    def drops(self) -> tuple[dict[str, int], dict[str, int]]:
        """(drops by class, drops by cause), cumulative since the spool file was created."""
        c = self.counters()
        by_cls = {k[5:]: v for k, v in c.items() if k.startswith("drop.")}
        by_cause = {k[6:]: v for k, v in c.items() if k.startswith("cause.")}
        return by_cls, by_cause

    def _bump(self, name: str, n: int = 1) -> None:
        if n <= 0:
            return
        self._counters[name] = self._counters.get(name, 0) + n
        self._db.execute(
            "INSERT INTO counters(name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + ?",
            (name, n, n),
        )

    def _forget(self, rows: Iterable[tuple[str, int]], cause: str | None) -> None:
        per_cls: dict[str, int] = {}
        for cls, size in rows:
            self._count[cls] -= 1
            self._bytes[cls] -= size
            per_cls[cls] = per_cls.get(cls, 0) + 1
        if cause is not None:
            for cls, n in per_cls.items():
                self._bump(f"drop.{cls}", n)
            self._bump(f"cause.{cause}", sum(per_cls.values()))

    def count_drop(self, cls: str, cause: str) -> None:
        """Count a message dropped outside the spool (e.g. rejected by the broker after it was deleted)."""
        with self._lock:
            self._db.execute("BEGIN")
            self._bump(f"drop.{cls}")
            self._bump(f"cause.{cause}")
            self._db.execute("COMMIT")

    # -- writing ---------------------------------------------------------------------------
    def put(self, msg: OutMessage, *, coalesce: bool = False) -> int | None:
        """Commit ``msg``; returns its row id, or None when it was dropped (and counted).

        ``coalesce``: delete queued messages on the same topic first (retained statuses).
        """
        props = json.dumps(msg.props, separators=(",", ":"))
        size = len(msg.payload) + len(msg.topic) + len(props)
        created = msg.created or self._clock()
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if coalesce:
                    gone = self._db.execute(
                        "DELETE FROM msgs WHERE topic = ? RETURNING cls, size", (msg.topic,)
                    ).fetchall()
                    self._forget(gone, None)
                    self._bump("superseded", len(gone))
                if size > self.config.max_bytes:
                    self._forget_new(msg.cls, "too_large")
                    self._db.execute("COMMIT")
                    logger.warning("dropped a %s message of %d bytes: larger than the whole spool cap", msg.cls, size)
                    return None
                if not self._make_room(size, _RANK[msg.cls]):
                    self._forget_new(msg.cls, "cap")
                    self._db.execute("COMMIT")
                    return None
                cur = self._db.execute(
                    "INSERT INTO msgs(cls, topic, payload, retain, props, msg_id, created, size) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (msg.cls, msg.topic, msg.payload, int(msg.retain), props, msg.msg_id, created, size),
                )
                self._db.execute("COMMIT")
            except BaseException:
                # SQLite already rolled back after some errors (SQLITE_FULL): a second ROLLBACK would
                # replace "database or disk is full" with "no transaction is active"
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            self._count[msg.cls] += 1
            self._bytes[msg.cls] += size
            row_id = cur.lastrowid
            assert row_id is not None
            self.last_id = row_id
            return row_id

    def _forget_new(self, cls: str, cause: str) -> None:
        self._bump(f"drop.{cls}")
        self._bump(f"cause.{cause}")

    def _make_room(self, size: int, rank: int) -> bool:
        """Evict by the documented plan until ``size`` more bytes fit; False if they cannot."""
        for cls, how in _PLAN:
            if _RANK[cls] > rank:
                continue
            while self.queued_bytes + size > self.config.max_bytes and self._count[cls] > 0:
                if how == "thin":
                    if self._count[cls] < 2:
                        break
                    ids = [r[0] for r in self._db.execute(
                        "SELECT id FROM msgs WHERE cls = ? ORDER BY id LIMIT ?", (cls, max(2, self._count[cls] // 2))
                    )]
                    victims = ids[1::2]
                else:
                    need = self.queued_bytes + size - self.config.max_bytes
                    victims, freed = [], 0
                    for rid, rsize in self._db.execute(
                        "SELECT id, size FROM msgs WHERE cls = ? ORDER BY id LIMIT 256", (cls,)
                    ):
                        victims.append(rid)
                        freed += rsize
                        if freed >= need:
                            break
                gone = self._delete(victims)
                self._forget(gone, "cap")
            if self.queued_bytes + size <= self.config.max_bytes:
                return True
        return self.queued_bytes + size <= self.config.max_bytes

    def _delete(self, ids: list[int]) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            marks = ",".join("?" * len(chunk))
            out += self._db.execute(f"DELETE FROM msgs WHERE id IN ({marks}) RETURNING cls, size", chunk).fetchall()
        return out

    # -- reading and acknowledging ---------------------------------------------------------
    def fetch(self, after_id: int, limit: int) -> list[SpoolRow]:
        """Up to ``limit`` rows with id > ``after_id``, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, cls, topic, payload, retain, props, msg_id, created FROM msgs "
                "WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit)
            ).fetchall()
        return [
            SpoolRow(int(r[0]), r[1], r[2], bytes(r[3]), bool(r[4]), json.loads(r[5]), r[6], float(r[7]))
            for r in rows
        ]

    def get(self, row_id: int) -> SpoolRow | None:
        with self._lock:
            r = self._db.execute(
                "SELECT id, cls, topic, payload, retain, props, msg_id, created FROM msgs WHERE id = ?", (row_id,)
            ).fetchone()
        if r is None:
            return None
        return SpoolRow(int(r[0]), r[1], r[2], bytes(r[3]), bool(r[4]), json.loads(r[5]), r[6], float(r[7]))

    def max_id(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT MAX(id) FROM msgs").fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def ack(self, ids: list[int]) -> int:
        """Delete acknowledged rows (one transaction); returns how many were still there."""
        if not ids:
            return 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            gone = self._delete(ids)
            self._db.execute("COMMIT")
            self._forget(gone, None)
        return len(gone)

    def reject(self, ids: list[int], cause: str) -> None:
        """Delete rows the broker refused (reason code >= 0x80) and count them as drops."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            gone = self._delete(ids)
            self._forget(gone, cause)
            self._db.execute("COMMIT")

    def expire(self) -> int:
        """Drop messages older than their class's age cap; returns how many."""
        now = self._clock()
        ages = {
            "frame": self.config.frame_max_age_s,
            "health": self.config.health_max_age_s,
            "response": self.config.max_age_s,
            "event": self.config.max_age_s,
            "status": self.config.max_age_s,
        }
        total = 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            for cls, age in ages.items():
                if self._count[cls] == 0:
                    continue
                gone = self._db.execute(
                    "DELETE FROM msgs WHERE cls = ? AND created < ? RETURNING cls, size", (cls, now - age)
                ).fetchall()
                self._forget(gone, "age")
                total += len(gone)
            self._db.execute("COMMIT")
        if total:
            logger.warning("dropped %d queued messages older than their age cap", total)
        return total

    # -- small persistent key/value (daily frame budget) ------------------------------------
    def get_meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def close(self) -> None:
        """Checkpoint and close; totals and counters stay readable afterwards."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:  # closing must not fail the shutdown
                logger.warning("spool checkpoint failed: %s", exc)
            self._db.close()
            os.close(self._lock_fd)  # releases the flock
