"""batch_order.py: the batch order is a pure function of (seed, epoch); length grouping cuts padding."""

from __future__ import annotations

from sparsegrad_core.batch_order import BatchOrder


def test_batch_order_is_a_pure_function_of_seed_and_epoch():
    order = BatchOrder(num_rows=50, batch_size=8, seed=3, accumulation=2)
    assert order.micro_batches_per_epoch == 7 and order.steps_per_epoch == 4
    e0 = order.micro_batches(0)
    assert e0 == BatchOrder(50, 8, 3, 2).micro_batches(0)
    assert e0 != order.micro_batches(1)
    assert sorted(i for b in e0 for i in b) == list(range(50))
    assert order.step(0, 3) == e0[6:7]  # last step of the epoch: one micro-batch left
    assert order.step(1, 1) == order.micro_batches(1)[2:4]


def test_length_grouping_cuts_padding_and_keeps_every_row():
    lengths = tuple((i * 37) % 60 + 3 for i in range(400))
    plain = BatchOrder(400, 16, 0)
    grouped = BatchOrder(400, 16, 0, lengths=lengths)

    def padded(order: BatchOrder) -> int:
        return sum(len(b) * max(lengths[i] for i in b) for b in order.micro_batches(0))

    assert padded(grouped) < 0.6 * padded(plain)
    assert sorted(i for b in grouped.micro_batches(0) for i in b) == list(range(400))
    assert grouped.micro_batches(0) == BatchOrder(400, 16, 0, lengths=lengths).micro_batches(0)
    assert grouped.micro_batches(0) != grouped.micro_batches(1)
