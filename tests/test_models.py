"""condlabel.models: the one locked fetch, against the moto S3 server process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from condlabel.models import fetch_model, pick_dtype
from condlabel.storage import StorageError


def test_s3_model_is_fetched_once_into_the_cache(s3fs_client, s3_bucket, tmp_path):
    s3fs_client.pipe(f"{s3_bucket}/m/config.json", b"{}")
    s3fs_client.pipe(f"{s3_bucket}/m/sub/weights.bin", b"0123")
    cache = tmp_path / "cache"
    path = fetch_model(f"s3://{s3_bucket}/m", cache_dir=cache)
    assert Path(path, "sub", "weights.bin").read_bytes() == b"0123"
    assert fetch_model(f"s3://{s3_bucket}/m", cache_dir=cache) == path  # unchanged: no refetch
    s3fs_client.pipe(f"{s3_bucket}/m/config.json", b'{"changed": 1}')
    assert fetch_model(f"s3://{s3_bucket}/m", cache_dir=cache) != path  # re-exported: refetch


@pytest.mark.parametrize("key", ["../../escape.txt", "sub/../../../escape.txt"])
def test_object_keys_that_leave_the_cache_are_refused(s3fs_client, s3_bucket, tmp_path, key):
    # S3 keys are plain strings: `..` segments are legal there and must not become paths.
    s3fs_client.pipe(f"{s3_bucket}/m/config.json", b"{}")
    s3fs_client.pipe(f"{s3_bucket}/m/{key}", b"planted")
    cache = tmp_path / "cache"
    with pytest.raises(StorageError, match=f"object key '{s3_bucket}/m/{key}'.*outside"):
        fetch_model(f"s3://{s3_bucket}/m", cache_dir=cache)
    assert not (tmp_path / "escape.txt").exists()
    assert [p.name for p in cache.iterdir()] == [".locks"]  # nothing downloaded, no partial left


def test_local_directories_and_hub_ids_pass_through(tmp_path):
    assert fetch_model(str(tmp_path)) == str(tmp_path)
    assert fetch_model(f"file://{tmp_path}") == str(tmp_path)
    assert fetch_model("org/some-model") == "org/some-model"
    with pytest.raises(StorageError, match="no such directory"):
        fetch_model(f"file://{tmp_path}/missing")


def test_pick_dtype_names_the_valid_choices():
    import torch

    assert pick_dtype("auto", "cpu") is torch.float32
    assert pick_dtype("auto", "cuda:0", bf16_supported=True) is torch.bfloat16
    assert pick_dtype("float16", "cpu") is torch.float16
    with pytest.raises(ValueError, match="float32, bfloat16, float16"):
        pick_dtype("int8", "cpu")


def test_auto_takes_bfloat16_only_where_the_gpu_has_it():
    """A GPU without bfloat16 (V100, T4): float16 for most models, float32 for T5-family ones
    (they overflow in float16); the GPU is asked when the caller does not say."""
    import torch

    assert pick_dtype("auto", "cuda:0", bf16_supported=False) is torch.float16
    assert pick_dtype("auto", "cuda", t5_family=True, bf16_supported=False) is torch.float32
    assert pick_dtype("auto", "cuda", t5_family=True, bf16_supported=True) is torch.bfloat16
    if not torch.cuda.is_available():  # asked, a machine without CUDA has no bfloat16
        assert pick_dtype("auto", "cuda") is torch.float16


def test_the_t5_family_is_recognised():
    from transformers import AutoConfig

    from condlabel.models import is_t5_family

    for model_type in ("t5", "mt5", "umt5", "longt5"):
        assert is_t5_family(AutoConfig.for_model(model_type))
    assert not is_t5_family(AutoConfig.for_model("llama"))


def test_models_and_backends_import_without_heavy_packages():
    """torch/transformers/peft/vllm load where a model does, not when a module is imported."""
    code = (
        "import sys\n"
        "import condlabel.models, condlabel.classifiers, condlabel.labelers.base,"
        " condlabel.labelers.encoding, condlabel.labelers.hf, condlabel.labelers.vllm\n"
        "heavy = ('torch', 'transformers', 'peft', 'vllm', 'ray')\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
