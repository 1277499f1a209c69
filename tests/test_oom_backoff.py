"""Out-of-memory handling in the labelers that batch on a device (`hf`, `ct2`), on the CPU: a
real hf labeler (and a real ct2 one) on a "device" that raises torch's `OutOfMemoryError` (or
CTranslate2's out-of-memory `RuntimeError`) above a batch size. A batch that does not fit is
halved down to one chunk; a chunk that does not fit alone is a `labeler_error` reject naming the
error; the next batch starts from the size that fitted."""

from __future__ import annotations

from typing import ClassVar

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from simulated_device import MONSTER, SimulatedDeviceHF, chunk_table  # noqa: E402
from tiny_models import sample_texts  # noqa: E402

from condlabel.config import HFLabelerConfig  # noqa: E402
from condlabel.convert.stages import label_or_reject  # noqa: E402
from condlabel.labelers.hf import HFLabeler  # noqa: E402
from condlabel.labelers.memory import (  # noqa: E402
    BatchLimit,
    PartialLabels,
    is_out_of_memory,
    run_in_fitting_batches,
)

GREEDY = {"do_sample": False, "max_new_tokens": 6, "max_batch_size": 8}


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return sample_texts(12, min_words=10, max_words=80, seed=3)


@pytest.fixture(scope="module")
def reference(tiny_t5, texts):
    return HFLabeler(HFLabelerConfig(model=str(tiny_t5), **GREEDY)).label(texts)


def test_what_counts_as_out_of_memory():
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory."))
    assert is_out_of_memory(RuntimeError("CUDA failed with error out of memory"))  # CTranslate2
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(ValueError("out of range"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


def test_a_batch_that_does_not_fit_is_halved_and_the_next_starts_where_it_fitted(
    tiny_t5, texts, reference
):
    labeler = SimulatedDeviceHF(HFLabelerConfig(model=str(tiny_t5), **GREEDY), capacity=3)
    results = labeler.label(texts)
    for a, b in zip(results, reference, strict=True):
        assert a.extra["generated_ids"] == b.extra["generated_ids"]
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
    # 8 rows failed, then 4, then halves of 2 fitted; every chunk was labeled once.
    assert labeler.calls[:4] == [(8, False), (4, False), (2, True), (2, True)]
    assert sum(rows for rows, fitted in labeler.calls if fitted) == len(texts)
    assert labeler.fits.size == 2
    labeler.calls.clear()
    again = labeler.label(texts)  # the actor's next batch: no out-of-memory first
    assert all(fitted and rows <= 2 for rows, fitted in labeler.calls)
    assert [r.raw_output for r in again] == [r.raw_output for r in results]


def test_a_chunk_that_does_not_fit_alone_is_a_labeler_error(tiny_t5, texts, reference):
    labeler = SimulatedDeviceHF(HFLabelerConfig(model=str(tiny_t5), **GREEDY), capacity=8)
    batch = list(texts)
    batch[5] = f"{MONSTER} " + batch[5]
    with pytest.raises(PartialLabels, match="1 of 12 chunk"):
        labeler.label(batch)
    labeled, rejects = label_or_reject(labeler, chunk_table(batch))
    assert [r.reason for r in rejects] == ["labeler_error"]
    assert "doc 'd5' chunk 0: OutOfMemoryError: CUDA out of memory" in rejects[0].detail
    assert rejects[0].raw == batch[5].encode()
    assert labeled.column("doc_id").to_pylist() == [f"d{i}" for i in range(12) if i != 5]
    by_text = dict(zip(texts, reference, strict=True))
    for text, raw in zip(
        labeled.column("text").to_pylist(), labeled.column("raw_output").to_pylist(), strict=True
    ):
        assert raw == by_text[text].raw_output
    assert labeler.fits.size is None  # one chunk too big alone does not shrink the others' batches


def test_other_errors_are_not_retried_in_halves():
    calls = []

    def run(items):
        calls.append(len(items))
        raise ValueError("a bug, not memory")

    with pytest.raises(ValueError, match="a bug"):
        run_in_fitting_batches(list(range(8)), run, BatchLimit())
    assert calls == [8]


def test_ct2_backs_off_the_same_way(tiny_t5, texts, tmp_path_factory):
    pytest.importorskip("ctranslate2")
    from condlabel.config.labelers import CT2LabelerConfig
    from condlabel.labelers.ct2 import CT2Labeler
    from condlabel.models import merge_model

    out = tmp_path_factory.mktemp("ct2-oom") / "model"
    merge_model(str(tiny_t5), None, str(out), format="ct2", quantization="float32")
    cfg = CT2LabelerConfig(model=str(out), compute_type="float32", intra_threads=1, **GREEDY)

    class SmallDeviceCT2(CT2Labeler):
        calls: ClassVar[list[int]] = []

        def _translate(self, encoded):
            self.calls.append(len(encoded))
            if len(encoded) > 5:
                raise RuntimeError("CUDA failed with error out of memory")
            return super()._translate(encoded)

    plain = CT2Labeler(cfg).label(texts)
    small = SmallDeviceCT2(cfg)
    results = small.label(texts)
    assert [r.raw_output for r in results] == [r.raw_output for r in plain]
    assert small.calls[:3] == [12, 6, 3] and small.fits.size == 3
