"""Converting a transformers T5-family checkpoint to a CTranslate2 model (`condlabel merge
--format ct2`), and the check that CTranslate2 is installed. Apart from `labelers/ct2.py` so
that `models.py` can convert without importing the labeler (which imports `models.py`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CT2_INSTALL_HINT = "pip install 'condlabel[ct2]'"


def require_ct2() -> Any:
    """The ctranslate2 module, or an ImportError with the install line."""
    try:
        import ctranslate2
    except ImportError as exc:
        raise ImportError(f"the ct2 labeler needs ctranslate2: {CT2_INSTALL_HINT} [{exc}]") from exc
    return ctranslate2


def convert_to_ct2(hf_dir: Path, out_dir: Path, quantization: str) -> Path:
    """A transformers T5-family checkpoint (safetensors, as `merge_model` writes it) converted
    to a CTranslate2 model in `out_dir`, weights in `quantization`, tokenizer files beside."""
    require_ct2()
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(hf_dir)
    if not getattr(config, "is_encoder_decoder", False):
        raise ValueError(
            f"--format ct2: {config.model_type} is not an encoder-decoder; the ct2 labeler runs "
            "T5-family (seq2seq) models (decoder-only labelers: the vllm or hf backend)"
        )
    tokenizer_files = [
        p.name
        for p in hf_dir.iterdir()
        if p.name.startswith(("tokenizer", "special_tokens_map", "spiece")) or p.suffix == ".model"
    ]
    converter = _t5_scale_converter()(str(hf_dir), copy_files=tokenizer_files)
    converter.convert(str(out_dir), quantization=quantization, force=True)
    return out_dir


def _t5_scale_converter() -> type:
    from ctranslate2.converters import TransformersConverter

    class T5ScaleConverter(TransformersConverter):
        """Converts T5 with the output scaling transformers applies.

        transformers 5 keeps T5's "scale the decoder output by d_model**-0.5" switch in
        `scale_decoder_outputs` (false for T5 v1.1, flan-t5, flan-ul2) and forces
        `tie_word_embeddings` to true; CTranslate2 4.8 reads the latter, so it would divide
        every logit of a flan model by sqrt(d_model): greedy text unchanged, log-probs and
        samples wrong. The loaded model's config is set back to what CTranslate2 reads."""

        def load_model(self, model_class, model_name_or_path, **kwargs):
            model = super().load_model(model_class, model_name_or_path, **kwargs)
            scale = getattr(model.config, "scale_decoder_outputs", None)
            if scale is not None:
                model.config.tie_word_embeddings = bool(scale)
            return model

    return T5ScaleConverter
