"""The GPS queue works for any batch size (GeoCLIP's only for batches that divide its size)."""

from __future__ import annotations

import torch

from geoconcept.model.queue import GPSQueue


def pts(start: int, n: int) -> torch.Tensor:
    ids = torch.arange(start, start + n, dtype=torch.float32)
    return torch.stack([ids, -ids], dim=1)


def test_fills_before_handing_out_entries():
    q = GPSQueue(5)
    assert q.entries().shape == (0, 2)
    q.push(pts(0, 3))
    assert torch.equal(q.entries(), pts(0, 3))


def test_wraps_around_and_overwrites_the_oldest():
    q = GPSQueue(5)
    q.push(pts(0, 3))
    q.push(pts(3, 3))  # runs past the end: 5 goes to slot 0
    assert int(q.ptr) == 1 and int(q.count) == 5
    assert torch.equal(q.oldest_first(), pts(1, 5))
    assert torch.equal(q.entries()[0], pts(5, 1)[0])
    q.push(pts(6, 4))
    assert torch.equal(q.oldest_first(), pts(5, 5))


def test_batch_larger_than_the_queue_keeps_its_last_points():
    q = GPSQueue(4)
    q.push(pts(0, 2))
    q.push(pts(100, 9))
    assert int(q.ptr) == 0 and int(q.count) == 4
    assert torch.equal(q.oldest_first(), pts(105, 4))
    q.push(pts(200, 1))
    assert torch.equal(q.oldest_first(), torch.cat([pts(106, 3), pts(200, 1)]))


def test_batch_equal_to_the_queue_and_empty_queue():
    q = GPSQueue(3)
    q.push(pts(0, 3))
    assert torch.equal(q.oldest_first(), pts(0, 3))
    empty = GPSQueue(0)
    empty.push(pts(0, 3))
    assert empty.entries().shape == (0, 2)


def test_entries_are_a_snapshot_and_state_round_trips():
    q = GPSQueue(4)
    q.push(pts(0, 3))
    snap = q.entries()
    q.push(pts(10, 2))
    assert torch.equal(snap, pts(0, 3))
    other = GPSQueue(4)
    other.load_state_dict(q.state_dict())
    other.push(pts(20, 1))
    q.push(pts(20, 1))
    assert torch.equal(other.oldest_first(), q.oldest_first())
