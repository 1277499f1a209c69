"""`MATERIALIZE_MAX_ROWS`: small training data is read from storage once and every pass
iterates it in the object store; larger data streams from storage on each pass."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from lm_fixtures import sentiment_sentences, tagged_table

from condlabel.config import StorageConfig
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
