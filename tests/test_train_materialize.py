"""`MATERIALIZE_MAX_ROWS`: small training data is read from storage once and every pass
iterates it in the object store; larger data streams from storage on each pass."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from lm_fixtures import sentiment_sentences, tagged_table

from condlabel.config import StorageConfig
from condlabel.config.train import TrainDataConfig
from condlabel.train.loop import MATERIALIZE_MAX_ROWS, read_training_rows

pytestmark = pytest.mark.usefixtures("ray_local")


def _files(tmp_path, rows: int) -> list[str]:
    table = tagged_table(sentiment_sentences(rows))
    files = []
    for i, start in enumerate(range(0, rows, rows // 4)):
        path = tmp_path / f"part-{i}.parquet"
        pq.write_table(table.slice(start, rows // 4), path)
        files.append(str(path))
    return files


def test_small_data_is_read_once_and_survives_its_files(tmp_path):
    from ray.data.dataset import MaterializedDataset

    files = _files(tmp_path, 40)
    rows = read_training_rows(files, StorageConfig(), (), materialize_max_rows=40)
    assert isinstance(rows, MaterializedDataset)
    for path in tmp_path.glob("part-*.parquet"):
        path.unlink()  # a second pass must not go back to storage
    first = sorted(r["text"] for r in rows.iter_rows())
    assert first == sorted(r["text"] for r in rows.iter_rows())
    assert len(first) == 40


def test_data_above_the_limit_or_a_limit_of_zero_streams(tmp_path):
    from ray.data.dataset import MaterializedDataset

    files = _files(tmp_path, 40)
    for limit in (39, 0):
        rows = read_training_rows(files, StorageConfig(), (), materialize_max_rows=limit)
        assert not isinstance(rows, MaterializedDataset)
        assert rows.count() == 40


def test_the_default_limit_keeps_a_crawl_streaming():
    assert MATERIALIZE_MAX_ROWS == 200_000


def test_streamed_data_is_read_in_a_new_seeded_file_order_each_pass(tmp_path):
    from condlabel.train.loop import shuffle_files

    files = _files(tmp_path, 40)
    data = TrainDataConfig()
    rows = read_training_rows(files, StorageConfig(), (), 0, file_shuffle=shuffle_files(data, 3))
    # In order of delivery, so that what differs between passes is the file order alone.
    rows.context.execution_options.preserve_order = True
    firsts = [
        [r["text"] for r in rows.iter_rows()][::10]  # each file's first row
        for _ in range(3)
    ]
    assert all(sorted(f) == sorted(firsts[0]) for f in firsts)
    assert len({tuple(f) for f in firsts}) > 1
    assert shuffle_files(TrainDataConfig(shuffle=False), 3) is None
