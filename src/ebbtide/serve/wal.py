"""An append-only log that makes posted events durable before they are acknowledged.

Why a log in front of the store: DuckDB takes one writer and a transaction per load, too
slow to commit every request of 100 events on its own. Requests instead append their lines
here; one writer thread writes whatever has queued up and calls ``fsync`` once for all of
it (group commit), then wakes every request it covered. The sink later moves the log into
the store and records how far it got, so a crash at any point loses no acknowledged line
and loads none twice.

The log is a folder of numbered segment files of JSON lines. A line is whole only with its
newline: after a ``kill -9`` the last line may be cut short, and `read` stops before it
(it was never acknowledged). Positions are ``(segment, byte offset)``.

Examples
--------
>>> import tempfile
>>> with tempfile.TemporaryDirectory() as folder:
...     log = AppendLog(folder)
...     durable = log.append([b'{"a": 1}', b'{"a": 2}']).result(timeout=5)
...     lines, end = log.read(Position(1, 0))
...     log.close()
>>> lines, end == durable
([b'{"a": 1}', b'{"a": 2}'], True)
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from ebbtide.errors import StoreError

#: A segment is closed and a new one started once it holds this many bytes.
SEGMENT_BYTES = 64 << 20
_SUFFIX = ".log"


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """A place in the log: segment number and byte offset within it."""

    segment: int
    offset: int

    def __str__(self) -> str:
        return f"{self.segment}:{self.offset}"

    @classmethod
    def parse(cls, text: str) -> Position:
        segment, offset = text.split(":")
        return cls(int(segment), int(offset))


class AppendLog:
    """Segment files of JSON lines with group commit.

    Parameters
    ----------
    folder : str or Path
        Created if missing. One process writes to it at a time.
    fsync : bool
        Call ``fsync`` before acknowledging (turn off only for throw-away tests).
    on_commit : callable, optional
        Called with (lines, seconds) after each group commit, for metrics.
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        fsync: bool = True,
        on_commit: Callable[[int, float], None] | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._fsync = fsync
        self._on_commit = on_commit
        self._queue: list[tuple[list[bytes] | None, Future]] = []  # None: rotate
        self._cond = threading.Condition()
        self._closed = False
        segments = self.segments()
        self._segment = segments[-1] if segments else 1
        path = self._path(self._segment)
        self._file = path.open("ab")
        self._truncate_torn_tail(path)
        self._durable = Position(self._segment, self._file.tell())
        self._writer = threading.Thread(target=self._write_loop, name="ebbtide-wal", daemon=True)
        self._writer.start()

    # -- writing -------------------------------------------------------------------------
    def append(self, lines: list[bytes]) -> Future:
        """Queue `lines` (each without its newline); the future resolves to the end
        `Position` once they are on disk."""
        future: Future = Future()
        with self._cond:
            if self._closed:
                raise StoreError("the event log is closed; the service is shutting down")
            self._queue.append((lines, future))
            self._cond.notify()
        return future

    def rotate(self) -> Future:
        """Close the current segment after the lines queued so far and start a new one;
        the future resolves to the new segment's start.

        Why: `drop_before` deletes whole segments only, so `Service.forget` rotates, loads
        the log into the store and then drops every older segment: no file of the log
        still holds the forgotten user's lines.
        """
        future: Future = Future()
        with self._cond:
            if self._closed:
                raise StoreError("the event log is closed; the service is shutting down")
            self._queue.append((None, future))
            self._cond.notify()
        return future

    def _write_loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue and self._closed:
                    return
                batch, self._queue = self._queue, []
            writes: list[tuple[list[bytes], Future]] = []
            for lines, future in batch:
                if lines is not None:
                    writes.append((lines, future))
                    continue
                self._commit(writes)  # lines queued before the rotation go in the old segment
                writes = []
                try:
                    self._rotate()
                except BaseException as exc:
                    future.set_exception(StoreError(f"the event log could not rotate: {exc}"))
                else:
                    future.set_result(self._durable)
            self._commit(writes)

    def _commit(self, batch: list[tuple[list[bytes], Future]]) -> None:
        """Write one group of requests, fsync once, and answer each of them."""
        if not batch:
            return
        started = time.perf_counter()
        try:
            count = self._write(batch)
        except BaseException as exc:  # the disk failed: nothing in this batch is acked
            for _, future in batch:
                future.set_exception(StoreError(f"the event log could not be written: {exc}"))
            return
        for _, future in batch:
            future.set_result(self._durable)
        if self._on_commit is not None:
            self._on_commit(count, time.perf_counter() - started)

    def _write(self, batch: list[tuple[list[bytes], Future]]) -> int:
        data = b"".join(line + b"\n" for lines, _ in batch for line in lines)
        self._file.write(data)
        self._file.flush()
        if self._fsync:
            os.fsync(self._file.fileno())
        self._durable = Position(self._segment, self._file.tell())
        if self._durable.offset >= SEGMENT_BYTES:
            self._rotate()
        return sum(len(lines) for lines, _ in batch)

    def _rotate(self) -> None:
        self._file.close()
        self._segment += 1
        self._file = self._path(self._segment).open("ab")
        self._durable = Position(self._segment, 0)
        if self._fsync:  # the new file's name must survive a crash too
            _fsync_folder(self.folder)

    # -- reading -------------------------------------------------------------------------
    @property
    def durable(self) -> Position:
        """The end of what is on disk and acknowledged."""
        return self._durable

    def read(self, start: Position, limit: int | None = None) -> tuple[list[bytes], Position]:
        """Whole lines from `start` up to the durable end (at most `limit`), and the
        position after the last one returned."""
        end = self._durable
        lines: list[bytes] = []
        position = start
        for segment in self.segments():
            if segment < position.segment or segment > end.segment:
                continue
            offset = position.offset if segment == position.segment else 0
            stop = end.offset if segment == end.segment else None
            with self._path(segment).open("rb") as handle:
                handle.seek(offset)
                data = handle.read() if stop is None else handle.read(max(stop - offset, 0))
            cut = data.rfind(b"\n") + 1  # a torn tail is not a line
            chunk = data[:cut].split(b"\n")[:-1]
            if limit is not None and len(lines) + len(chunk) >= limit:
                chunk = chunk[: limit - len(lines)]
                used = sum(len(line) + 1 for line in chunk)
                return [*lines, *chunk], Position(segment, offset + used)
            lines.extend(chunk)
            position = Position(segment, offset + cut)
            if segment < end.segment and stop is None:
                position = Position(segment + 1, 0)
        return lines, position

    def drop_before(self, position: Position) -> None:
        """Delete whole segments before `position` (they are in the store)."""
        for segment in self.segments():
            if segment < position.segment:
                self._path(segment).unlink(missing_ok=True)

    def segments(self) -> list[int]:
        return sorted(
            int(path.stem) for path in self.folder.glob(f"*{_SUFFIX}") if path.stem.isdigit()
        )

    # -- life cycle ----------------------------------------------------------------------
    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._writer.join(timeout=10)
        self._file.close()

    def _path(self, segment: int) -> Path:
        return self.folder / f"{segment:08d}{_SUFFIX}"

    def _truncate_torn_tail(self, path: Path) -> None:
        """Cut a last line left half-written by a crash: it was never acknowledged."""
        size = path.stat().st_size
        if size == 0:
            return
        with path.open("rb") as handle:
            handle.seek(max(size - (1 << 20), 0))
            tail = handle.read()
        if tail.endswith(b"\n"):
            return
        keep = size - len(tail) + tail.rfind(b"\n") + 1
        self._file.truncate(keep)
        self._file.seek(keep)


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
