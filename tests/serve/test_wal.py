"""The service's append log: what is acknowledged is read back whole, a line cut short by
a crash is dropped (it was never acknowledged), and positions survive segment changes."""

from __future__ import annotations

from ebbtide.serve import wal
from ebbtide.serve.wal import AppendLog, Position


def test_a_torn_last_line_is_cut_and_never_read(tmp_path) -> None:
    log = AppendLog(tmp_path)
    log.append([b"one", b"two"]).result(timeout=5)
    log.close()
    segment = tmp_path / "00000001.log"
    segment.write_bytes(segment.read_bytes() + b'{"half a li')  # a crash mid-write
    again = AppendLog(tmp_path)
    lines, end = again.read(Position(1, 0))
    again.append([b"three"]).result(timeout=5)
    after, _ = again.read(end)
    again.close()
    assert lines == [b"one", b"two"] and after == [b"three"]


def test_reading_crosses_segments_and_stops_at_the_limit(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(wal, "SEGMENT_BYTES", 16)
    log = AppendLog(tmp_path)
    for i in range(6):
        log.append([f"line-{i}".encode()]).result(timeout=5)
    first, middle = log.read(Position(1, 0), limit=4)
    rest, end = log.read(middle)
    log.drop_before(end)
    log.close()
    assert first + rest == [f"line-{i}".encode() for i in range(6)]
    assert len(first) == 4 and len(log.segments()) == 1
