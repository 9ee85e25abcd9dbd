"""The frames between the daemon and a decode worker (workers/frames.py): pure encoding rules."""

from __future__ import annotations

import numpy as np
import pytest

from fabstir_node.workers import frames


def parse(pieces):
    data = b"".join(bytes(p) for p in pieces)
    length = frames.header_length(data[: frames.PREFIX_SIZE])
    header, sizes = frames.parse_header(data[frames.PREFIX_SIZE : frames.PREFIX_SIZE + length])
    body = bytearray(data[frames.PREFIX_SIZE + length :])
    return header, frames.split(body, sizes)


def test_a_frame_carries_its_header_and_buffers_unchanged():
    rows = np.arange(12, dtype=np.float16).reshape(3, 4)
    header, buffers = parse(frames.encode({"op": "x", "rows": frames.describe(rows)}, [rows, b"", b"key"]))
    assert header == {"op": "x", "rows": {"dtype": "<f2", "shape": [3, 4]}}
    assert [len(b) for b in buffers] == [24, 0, 3] and bytes(buffers[2]) == b"key"
    assert np.array_equal(frames.array(header["rows"], buffers[0]), rows)


@pytest.mark.parametrize("prefix", [b"\x00\x00\x00\x00", b"\xff\xff\xff\xff"])
def test_a_header_length_out_of_range_is_refused(prefix):
    with pytest.raises(frames.FrameError):
        frames.header_length(prefix)


@pytest.mark.parametrize("head", [b"not json", b"[1]", b'{"sizes": [-1]}', b'{"sizes": "x"}', b'{"op": 1}'])
def test_a_header_without_valid_sizes_is_refused(head):
    with pytest.raises(frames.FrameError):
        frames.parse_header(head)


def test_a_body_of_the_wrong_length_is_refused():
    with pytest.raises(frames.FrameError):
        frames.split(bytearray(5), [2, 2])


def test_an_array_must_match_its_bytes_and_never_holds_objects():
    with pytest.raises(frames.FrameError):
        frames.array({"dtype": "<f4", "shape": [2, 2]}, memoryview(bytes(12)))
    with pytest.raises(frames.FrameError):
        frames.array({"dtype": "|O", "shape": [1]}, memoryview(bytes(8)))
    with pytest.raises(frames.FrameError):
        frames.array(None, memoryview(b""))


def test_a_decoded_chunk_keeps_no_view_of_the_reply_it_came_in():
    """Ids and metadata live until the load joins them: they must not pin each chunk's whole reply."""
    from fabstir_node.formats.synthetic import synthetic_records
    from fabstir_node.formats.writer import build_database
    from fabstir_node.workers.decode import ChunkJob, decode_job, read_result, result_frame

    files = build_database(synthetic_records(50, 8, seed=1), owner="0x" + "ab" * 20, name="kb")
    body = next(b for p, b in files.items() if "/chunk-" in p)
    result = decode_job(ChunkJob(0, 50, 8, "f16"), body, None)
    header, buffers = parse(result_frame(result))
    got = read_result(header, buffers)
    for packed in (got.ids.blobs, got.metadata):
        assert packed.offsets.base is None and isinstance(packed.buffer, bytes)
    assert list(got.ids) == list(result.ids) and list(got.metadata) == list(result.metadata)
