"""`data.shuffle`: each pass over the training data in a new seeded order across the whole
dataset, the same for any number of workers, and a grouped corpus mixed from the first batch."""

from __future__ import annotations

import pyarrow as pa
import pytest

from condlabel.config import TrainConfig, TrainDataConfig, build_config
from condlabel.train.data import micro_batches
from condlabel.train.shuffle import epoch_order, pass_rows, row_ids, worker_rows

GROUPS, PER_GROUP = 10, 60


def _grouped() -> pa.Table:
    """A corpus sorted by group, as a corpus read file after file is: group 0's rows, then 1's."""
    texts = [f"group{g} says sentence {i}." for g in range(GROUPS) for i in range(PER_GROUP)]
    return pa.table(
        {
            "text": texts,
            "synopsis": [""] * len(texts),
            "tags": pa.array([[t.split()[0]] for t in texts], pa.list_(pa.string())),
            "control_tokens": pa.array([[] for _ in texts], pa.list_(pa.string())),
            "parse_ok": [True] * len(texts),
        }
    )


class _Shard:
    """What the training data needs of a Ray Data shard: `iter_batches`, in read order."""

    def __init__(self, table: pa.Table):
        self.table, self.calls = table, []

    def iter_batches(self, batch_size: int, batch_format: str, **kwargs):
        self.calls.append(kwargs)
        for start in range(0, self.table.num_rows, batch_size):
            yield self.table.slice(start, batch_size)


def _texts(batches) -> list[str]:
    return [t for batch in batches for t in batch.column("text").to_pylist()]


def _pass(table: pa.Table, epoch: int, seed: int = 0, rank: int = 0, world: int = 1) -> list:
    data = TrainDataConfig()
    return _texts(pass_rows(_Shard(table), data, seed, rank, world, epoch, whole=True))


def test_shuffle_is_the_default():
    assert TrainDataConfig().shuffle is True


def test_each_pass_is_a_new_order_of_every_row_and_the_seed_repeats_it():
    table = _grouped()
    first, second = _pass(table, 0), _pass(table, 1)
    assert sorted(first) == sorted(second) == sorted(table.column("text").to_pylist())
    assert first != second
    # Not one order shifted: most rows change place between the two passes.
    assert sum(a == b for a, b in zip(first, second, strict=True)) < len(first) // 10
    assert _pass(table, 0) == first and _pass(table, 1) == second  # same seed, same orders
    assert _pass(table, 0, seed=1) != first


def test_a_grouped_corpus_is_interleaved_within_the_first_batch():
    first_batch = _pass(_grouped(), 0)[:32]
    groups = {text.split()[0] for text in first_batch}
    assert len(groups) >= 7  # of 10; read order would give one group for 60 rows


def test_the_order_is_the_same_for_any_number_of_workers_and_any_read_order():
    table = _grouped()
    alone = _pass(table, 2)
    ranks = [_pass(table, 2, rank=r, world=2) for r in range(2)]
    assert [t for pair in zip(*ranks, strict=True) for t in pair] == alone
    assert not set(ranks[0]) & set(ranks[1])
    # Ray Data's parallel read may deliver the blocks in any order: the order does not move.
    reversed_read = table.take(pa.array(range(table.num_rows - 1, -1, -1)))
    assert _pass(reversed_read, 2) == alone


def test_rows_of_equal_content_share_an_id_and_every_row_is_kept():
    table = pa.concat_tables([_grouped().slice(0, 3), _grouped().slice(0, 3)])
    ids = row_ids(table)
    assert ids[:3] == ids[3:] and len(set(ids)) == 3
    assert sorted(epoch_order(ids, 0, 0)) == list(range(6))
    assert worker_rows(table, 0, 0, 0, 1).num_rows == 6


def test_shuffle_off_keeps_the_read_order():
    table = _grouped()
    data = TrainDataConfig(shuffle=False)
    for whole in (True, False):
        shard = _Shard(table)
        assert _texts(pass_rows(shard, data, 0, 0, 1, 3, whole)) == table.column("text").to_pylist()
        assert shard.calls == [{}]


def test_streamed_data_is_mixed_in_a_seeded_buffer_that_changes_each_pass():
    data = TrainDataConfig(shuffle_buffer_rows=500)
    shard = _Shard(_grouped())
    list(pass_rows(shard, data, 5, 1, 2, 0, whole=False))
    list(pass_rows(shard, data, 5, 1, 2, 1, whole=False))
    sizes = {call["local_shuffle_buffer_size"] for call in shard.calls}
    seeds = [call["local_shuffle_seed"] for call in shard.calls]
    assert sizes == {500} and seeds[0] != seeds[1]


@pytest.fixture(scope="module")
def tokenizer(tiny_gpt2_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_gpt2_dir)


def test_the_first_trained_blocks_mix_the_groups(tokenizer):
    """What the model trains on first: blocks that hold several groups, by default."""
    cfg = build_config(
        TrainConfig,
        {
            "data": {"prefix": "control_tokens"},
            "optimization": {"seq_len": 64, "micro_batch_size": 4},
        },
    )

    def first_groups(whole: bool) -> set[str]:
        ids, _ = next(micro_batches(_Shard(_grouped()), tokenizer, cfg, 0, 0, world=1, whole=whole))
        text = tokenizer.decode([i for block in ids for i in block])
        return {g for g in (f"group{n}" for n in range(GROUPS)) if g in text}

    assert len(first_groups(whole=True)) >= 5
    # The same shard in read order (a stand-in that ignores the buffer): one group.
    assert first_groups(whole=False) == {"group0"}
