"""Planning blocks of one case file (pipeline.core.blocks): every block is read as the whole file reads.

Random CSV texts with quoted commas, newlines and escaped quotes, CRLF endings, empty lines,
records with the wrong number of fields and a last line with or without its newline: the chunks
read block by block are the chunks read from the whole file, frame for frame and reason for reason.
"""

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.core.blocks import WINDOW_BYTES, _RecordScan, plan_blocks
from pipeline.core.casefiles import BlockMismatchError, FileBlock, csv_data_start, file_columns, iter_chunks


def _random_csv(rng: random.Random, rows: int, columns: int = 3) -> bytes:
    def value() -> str:
        r = rng.random()
        if r < 0.45:
            return rng.choice(["a", "1", "", "xy"])
        if r < 0.85:
            return '"' + rng.choice(["a,b", "l1\nl2", 'q""q', "", "x\r\ny", "\n", '""']) + '"'
        return rng.choice(["7", "zz", " ", "\ufeff1"])  # a byte-order mark, at a record's start too

    newline = rng.choice(["\n", "\r\n"])
    lines = [",".join(f"h{i}" for i in range(columns))]
    for _ in range(rows):
        fields = columns if rng.random() > 0.1 else rng.choice([1, columns + 1])  # some malformed records
        lines.append(",".join(value() for _ in range(fields)))
        if rng.random() < 0.05:
            lines.append("")  # an empty line is no record
    return (newline.join(lines) + rng.choice([newline, ""])).encode()


def _read(path: Path, chunk_rows: int, blocks: list[FileBlock] | None = None) -> list:
    if blocks is None:
        return list(iter_chunks(path, chunk_rows))
    return [chunk for block in blocks for chunk in iter_chunks(path, chunk_rows, block=block)]


def _assert_same_chunks(whole: list, split: list) -> None:
    assert len(whole) == len(split)
    for a, b in zip(whole, split):
        pd.testing.assert_frame_equal(a.frame, b.frame, check_exact=True)
        assert a.malformed == b.malformed


# 5 bytes: quotes, CRLFs and empty lines across windows; 67: across the planner's 64-bit words too
@pytest.mark.parametrize("window", [None, 5, 67])
def test_planned_blocks_read_as_the_whole_file(tmp_path, window, monkeypatch):
    if window is not None:
        monkeypatch.setattr("pipeline.core.blocks.WINDOW_BYTES", window)
    rng, path, split_files = random.Random(16), tmp_path / "cases.csv", 0
    for _ in range(150):
        path.write_bytes(_random_csv(rng, rng.randint(0, 80)))
        chunk_rows = rng.randint(1, 7)
        plan = {"chunk_rows": chunk_rows, "block_bytes": rng.randint(20, 200), "lead": rng.choice([0, 0, 1, 2, 3])}
        blocks = list(plan_blocks(path, **plan))
        if window is not None:  # the plan does not depend on the window
            monkeypatch.setattr("pipeline.core.blocks.WINDOW_BYTES", WINDOW_BYTES)
            assert list(plan_blocks(path, **plan)) == blocks
            monkeypatch.setattr("pipeline.core.blocks.WINDOW_BYTES", window)
        split_files += len(blocks) > 1
        assert [b.first_row % chunk_rows for b in blocks] == [0] * len(blocks)  # whole chunks
        assert all(b.end == c.start for b, c in zip(blocks, blocks[1:]))  # consecutive byte ranges
        assert all(b.first_row + b.rows == c.first_row for b, c in zip(blocks, blocks[1:]))
        _assert_same_chunks(_read(path, chunk_rows), _read(path, chunk_rows, blocks))
    assert split_files > 100


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_a_record_that_starts_with_a_byte_order_mark_keeps_it_in_every_block(tmp_path, newline):
    """Arrow drops a byte-order mark at the start of the stream it reads, and a stream starts after
    the header and at each block: a record there kept it in no engine where one further on kept it
    in the pandas engine alone (a Dask job scored an age the pandas engine rejected). It is part
    of its field wherever the record is, as pandas reads it; the file's own mark, before the
    header, is not."""
    bom = "\ufeff"
    lines = [bom + "age,sex,case_id"] + [f"{bom}{20 + i},male,c{i}" if i % 2 == 0 else f"{20 + i},female,c{i}"
                                         for i in range(12)]
    lines.insert(5, f"{bom}7,x")  # a malformed record that starts with one
    path = tmp_path / "marks.csv"
    path.write_bytes((newline.join(lines) + newline).encode())
    whole = _read(path, 2)
    frame = pd.concat([c.frame for c in whole], ignore_index=True)
    assert list(frame.columns) == ["age", "sex", "case_id"]
    assert frame["age"].tolist()[:4] == [bom + "20", "21", bom + "22", "23"]
    assert [c.malformed for c in whole] == [{}, {}, {0: f"record 6 of {path} (the header is record 1) has 2 fields; "
                                                        "the header has 3"}, {}, {}, {}, {}]
    blocks = list(plan_blocks(path, chunk_rows=2, block_bytes=20))
    assert len(blocks) > 3 and any(path.read_bytes()[b.start:b.start + 3] == bom.encode() for b in blocks[1:])
    _assert_same_chunks(whole, _read(path, 2, blocks))


def test_records_counted_as_arrow_counts_them(tmp_path):
    rng, path = random.Random(7), tmp_path / "cases.csv"
    for _ in range(100):
        text = _random_csv(rng, rng.randint(0, 60))
        path.write_bytes(text)
        scan = _RecordScan(csv_data_start(path))
        start = csv_data_start(path)
        ends = scan.window(np.frombuffer(text[start:], dtype=np.uint8)) if len(text) > start else []
        assert scan.regular
        counted = scan.finish(len(text))
        assert counted == sum(len(c.frame) for c in iter_chunks(path, 10))  # Arrow's records, malformed included
        if len(ends):
            places = ends.at(np.arange(len(ends)))
            assert all(text[e:e + 1] == b"\n" for e in places) and list(places) == sorted(set(places))
            assert list(ends.at(np.array([len(ends) - 1]))) == [places[-1]]


@pytest.mark.parametrize("window", [64, None])  # 64 bytes: blocks before the odd record's window too
@pytest.mark.parametrize("oddity", [b'7,a"b,c\n', b'7,"a"b,c\n', b"7,a\rb,c\n", b'7,"open,c\n'])
def test_quoting_the_planner_cannot_follow_leaves_the_rest_of_the_file_whole(tmp_path, oddity, window, monkeypatch):
    """From the last chunk start before the odd byte, however far into its window: a stray quote
    (``5'10"``) anywhere in the first window of 16 MB made the whole file one block."""
    if window is not None:
        monkeypatch.setattr("pipeline.core.blocks.WINDOW_BYTES", window)
    lines = [b"h0,h1,h2\n"] + [f"{i},x,y\n".encode() for i in range(200)]
    lines.insert(120, oddity)  # record 119
    path = tmp_path / "odd.csv"
    path.write_bytes(b"".join(lines))
    blocks = list(plan_blocks(path, chunk_rows=10, block_bytes=300))
    assert len(blocks) > 2 and blocks[-1].rows is None and blocks[-1].first_row < 120
    if b"open" not in oddity:  # (an unclosed quote is found at the end of the file)
        assert blocks[-1].first_row == 110
    _assert_same_chunks(_read(path, 10), _read(path, 10, blocks))


def test_a_small_file_is_one_block(tmp_path):
    path = tmp_path / "small.csv"
    path.write_bytes(b"a,b\n1,2\n3,4\n")
    assert list(plan_blocks(path, chunk_rows=1, block_bytes=1 << 20)) == [FileBlock(start=4)]


def test_a_file_of_blank_lines_is_one_block_however_small_the_blocks(tmp_path):
    """No record to split at: the file is still one block, so it gets its (empty) part."""
    path = tmp_path / "blank.csv"
    path.write_bytes(b"case_id,age,sex\n\n\n\r\n\n\n")
    assert list(plan_blocks(path, chunk_rows=1, block_bytes=1)) == [FileBlock(start=16)]


def test_parquet_blocks_are_row_ranges_of_whole_chunks(tmp_path):
    path = tmp_path / "cases.parquet"
    pq.write_table(pa.table({"case_id": [f"c{i}" for i in range(2500)], "age": [str(i % 90) for i in range(2500)]}),
                   path, row_group_size=700)
    blocks = list(plan_blocks(path, chunk_rows=300, block_bytes=path.stat().st_size // 4))
    assert [(b.first_row, b.rows) for b in blocks] == [(0, 900), (900, 900), (1800, 700)]
    assert [(b.start, b.end) for b in blocks] == [(0, 2), (1, 3), (2, 4)]  # the row groups holding them
    _assert_same_chunks(_read(path, 300), _read(path, 300, blocks))
    # planned from the footer at once: no small blocks first
    assert list(plan_blocks(path, chunk_rows=300, block_bytes=path.stat().st_size // 4, lead=2)) == blocks


def test_a_range_index_is_read_as_its_column_in_every_block(tmp_path):
    """Ids pandas keeps only as a range in the metadata (evenly spaced) are rebuilt from each
    block's first row, as pd.read_parquet rebuilds them for the whole file."""
    path = tmp_path / "spaced.parquet"
    frame = pd.DataFrame({"case_id": range(5, 5 + 7 * 2500, 7), "age": [str(i % 90) for i in range(2500)]})
    frame.set_index("case_id").to_parquet(path, row_group_size=700)
    assert "case_id" not in pq.read_schema(path).names and file_columns(path) == ["age", "case_id"]
    blocks = list(plan_blocks(path, chunk_rows=300, block_bytes=path.stat().st_size // 4))
    assert len(blocks) > 1
    whole = _read(path, 300)
    _assert_same_chunks(whole, _read(path, 300, blocks))
    assert pd.concat([c.frame for c in whole])["case_id"].astype(str).tolist() == [str(i) for i in frame["case_id"]]


def test_blocks_split_at_the_chunk_start_nearest_each_equal_share(tmp_path):
    path = tmp_path / "even.csv"
    path.write_bytes(b"a,b\n" + b"".join(f"{i:05d},x\n".encode() for i in range(1000)))
    blocks = list(plan_blocks(path, chunk_rows=30, block_bytes=(path.stat().st_size - 4) // 4))
    # splits at 240, 510 and 750: the nearest multiples of 30; the last block runs to the end, uncounted
    assert [(b.first_row, b.rows) for b in blocks] == [(0, 240), (240, 270), (510, 240), (750, None)]
    _assert_same_chunks(_read(path, 30), _read(path, 30, blocks))


def test_the_scan_stops_where_the_last_block_starts(tmp_path, monkeypatch):
    """The planner reads no further than the window that holds the last block's start: the rest
    of the file is that block's, read to the end by the worker that scores it (a quarter of the
    planning pass saved with four blocks). What lies beyond does not change the plan."""
    monkeypatch.setattr("pipeline.core.blocks.WINDOW_BYTES", 64)
    scanned = []
    window = _RecordScan.window
    monkeypatch.setattr(_RecordScan, "window", lambda self, data: (scanned.append(len(data)), window(self, data))[1])
    head = b"a,b\n" + b"".join(f"{i:05d},x\n".encode() for i in range(1100))  # 8 bytes a record
    records = b"".join(f"{i:05d},y\n".encode() for i in range(250)) + b"\n\n"
    tails = {"records": records, "no case file's": b'x,"' + b"\xff" * (len(records) - 3)}  # a quote never closed,
    # bytes that are not UTF-8
    plans = {}
    for name, tail in tails.items():
        path = tmp_path / "cases.csv"
        path.write_bytes(head + tail)
        scanned.clear()
        plans[name] = list(plan_blocks(path, chunk_rows=30, block_bytes=(path.stat().st_size - 4) // 4))
        assert 4 + sum(scanned) < len(head), name  # the tail was never read
    assert plans["records"] == plans["no case file's"]
    assert [(b.first_row, b.rows) for b in plans["records"]] == [(0, 330), (330, 360), (690, 330), (1020, None)]
    path.write_bytes(head + tails["records"])
    _assert_same_chunks(_read(path, 30), _read(path, 30, plans["records"]))


@pytest.mark.parametrize("lead", [1, 2, 3])
def test_leading_blocks_are_small_so_that_every_worker_starts_at_once(tmp_path, lead):
    """A block is known once the scan has passed its end: ``lead`` small blocks first (about a
    sixteenth of a block each, in whole chunks), then blocks of about ``block_bytes``."""
    from pipeline.core.blocks import LEAD_DIVISOR

    path = tmp_path / "even.csv"
    path.write_bytes(b"a,b\n" + b"".join(f"{i:05d},x\n".encode() for i in range(4000)))  # 8 bytes a record
    block_bytes = (path.stat().st_size - 4) // 4
    blocks = list(plan_blocks(path, chunk_rows=10, block_bytes=block_bytes, lead=lead))
    small = block_bytes // LEAD_DIVISOR
    assert len(blocks) == lead + 4
    assert all(abs(b.end - 4 - small * (k + 1)) <= 40 for k, b in enumerate(blocks[:lead]))  # the nearest chunk start
    assert all(abs(b.end - b.start - block_bytes) < small for b in blocks[lead:-1])
    assert blocks[-1].rows is None and all(b.first_row % 10 == 0 for b in blocks)
    _assert_same_chunks(_read(path, 10), _read(path, 10, blocks))
    with pytest.raises(ValueError, match="lead == -1, must be >= 0"):
        list(plan_blocks(path, chunk_rows=10, block_bytes=block_bytes, lead=-1))
    # a file that is one block gets no leading ones
    assert list(plan_blocks(path, chunk_rows=10, block_bytes=path.stat().st_size, lead=lead)) == [FileBlock(start=4)]


def test_a_tiny_block_size_plans_one_block_per_chunk_in_little_memory(tmp_path):
    """A block size of one byte asks for a block per byte: the planner makes one per chunk, and
    holds no list of the byte targets (a 4 MB file took about 200 MB of them)."""
    import tracemalloc

    path = tmp_path / "many.csv"
    path.write_bytes(b"a,b\n" + b"".join(f"{i:07d},x\n".encode() for i in range(400_000)))
    peaks = {}
    for block_bytes in (1, (path.stat().st_size - 4) // 4):  # a byte, and a quarter of the data
        tracemalloc.start()
        try:
            blocks = list(plan_blocks(path, chunk_rows=100_000, block_bytes=block_bytes))
            peaks[block_bytes] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        # (a block a byte: the scan reaches the end before the last target, and counts the last block too)
        assert [(b.first_row, b.rows) for b in blocks] == [(0, 100_000), (100_000, 100_000), (200_000, 100_000),
                                                            (300_000, 100_000 if block_bytes == 1 else None)]
    # the scan's windows alike; the byte targets would add about 150 MB
    assert peaks[1] < peaks[max(peaks)] + (16 << 20), {k: f"{v / 2**20:.0f} MB" for k, v in peaks.items()}
    _assert_same_chunks(_read(path, 100_000), _read(path, 100_000, blocks))


def test_a_block_that_does_not_hold_its_planned_rows_is_refused(tmp_path):
    path = tmp_path / "cases.csv"
    path.write_bytes(b"a,b\n" + b"".join(f"{i},x\n".encode() for i in range(100)))
    block = next(iter(plan_blocks(path, chunk_rows=10, block_bytes=100)))
    assert block.rows is not None and block.rows < 100
    with pytest.raises(BlockMismatchError, match=f"holds {block.rows} records, not the {block.rows + 1} planned"):
        list(iter_chunks(path, 10, block=block._replace(rows=block.rows + 1)))


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_one_file_gets_two_blocks_per_worker_by_default(tmp_path, workers, monkeypatch):
    """The default block size splits one file into exactly BLOCKS_PER_WORKER blocks per worker:
    a block fewer leaves a worker idle while another scores its second block."""
    from pipeline.serve import dask as engine

    monkeypatch.setattr(engine, "MIN_BLOCK_BYTES", 1)
    path = tmp_path / "cases.csv"
    path.write_bytes(b'"case_id","age","sex"\n' + b"".join(f"c{i:05d},{20 + i % 60},female\n".encode()
                                                           for i in range(3001)))
    size = engine.default_block_bytes([path], workers)
    blocks = list(plan_blocks(path, chunk_rows=10, block_bytes=size))
    assert len(blocks) == engine.BLOCKS_PER_WORKER * workers
    assert sum(b.rows for b in blocks[:-1]) == blocks[-1].first_row < 3001


def test_a_malformed_record_that_is_not_utf8_is_named_by_its_record_in_any_block(tmp_path):
    """pyarrow cannot hand such a record to the row handler as text: the read stops, and the error
    names the record as the file numbers it, whichever block holds it."""
    from pipeline.core.errors import BatchInputError

    path = tmp_path / "cases.csv"
    path.write_bytes(b"h0,h1\n" + b"".join(b"%d,x\n" % i for i in range(300)) + b"b,x,\xff\n" + b"c,y\n")
    expected = r"record 302 \(the header is record 1\) has 3 fields where the header has 2, and is not valid UTF-8"
    with pytest.raises(BatchInputError, match=expected):
        _read(path, 50)
    blocks = list(plan_blocks(path, chunk_rows=50, block_bytes=400))
    assert len(blocks) > 1 and blocks[-1].first_row > 0
    with pytest.raises(BatchInputError, match=expected):
        _read(path, 50, blocks)


def test_an_undecodable_malformed_record_prints_no_traceback_and_other_reports_still_do(tmp_path, monkeypatch):
    """pyarrow reports the record's decoding error as an "Exception ignored" traceback on stderr
    before the read's own error; only that report is kept off, any other still reaches the hook."""
    import sys

    from pipeline.core.errors import BatchInputError

    reports = []
    monkeypatch.setattr(sys, "unraisablehook", reports.append)
    path = tmp_path / "cases.csv"
    path.write_bytes(b"h0,h1\n1,x\nb,x,\xff\n")
    with pytest.raises(BatchInputError, match="not valid UTF-8"):
        _read(path, 50)
    assert reports == []

    class Unraisable:
        def __del__(self):
            raise ValueError("raised in __del__")

    Unraisable()
    assert [type(r.exc_value) for r in reports] == [ValueError]


@pytest.mark.parametrize("dictionary", [False, True])
def test_a_whole_parquet_file_reads_in_exact_chunks_across_row_groups(tmp_path, dictionary):
    """Row groups that chunk_rows does not divide: the chunks still hold exactly chunk_rows rows,
    as a file split into blocks reads, so repeated ids and rejects fall in the same chunks."""
    ages = pa.array([str(20 + i % 50) for i in range(25_000)])
    table = pa.table({"age": ages.dictionary_encode() if dictionary else ages, "sex": pa.array(["male"] * 25_000)})
    path = tmp_path / "groups.parquet"
    pq.write_table(table, path, row_group_size=9000)
    chunks = [c.frame for c in iter_chunks(path, 4096)]
    assert [len(f) for f in chunks] == [4096] * 6 + [424]
    assert pd.concat(chunks)["age"].astype(str).tolist() == ages.to_pylist()
