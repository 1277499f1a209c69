"""Typed run configuration: one YAML file -> pydantic models, strict and defaulted for a laptop.

Every field is documented where it is declared; the docstrings become the `--help` text of each
command. Unknown keys and bad values are collected and reported together, each naming its key,
before any work starts (`ConfigError`).

    common.py       the strict base, ConfigError, storage, prefix format, shared field groups
    labelers.py     labeler backends (keyphrase, hf, vllm, ct2), the `labeler` file kind
    classifiers.py  control-token classifiers (vader, hf)
    convert.py      ConvertConfig (`condlabel convert`)
    distill.py      DistillConfig (`condlabel distill`)
    train.py        TrainConfig (`condlabel train`)
    eval.py         EvalConfig (`condlabel eval`)
    load.py         YAML + `--set` loading, one loader per kind, and the `--help` generator
"""

from __future__ import annotations

from condlabel.config.classifiers import (
    NONTOXIC_TOKENS,
    SENTIMENT_TOKENS,
    TOXICITY_TOKENS,
    ClassifierConfig,
    HFClassifierConfig,
    Sentiment,
    VaderClassifierConfig,
)
from condlabel.config.common import (
    DEFAULT_PREFIX_TEMPLATE,
    PREFIX_FIELDS,
    ConfigError,
    FormatConfig,
    GenerationFields,
    RayConnection,
    RunConfig,
    StorageConfig,
    StrictModel,
)
from condlabel.config.convert import (
    ChunkConfig,
    ComputeConfig,
    ConvertConfig,
    InputConfig,
    OutputConfig,
)
from condlabel.config.distill import (
    DistillCheckpointConfig,
    DistillConfig,
    DistillDataConfig,
    DistillOptimizationConfig,
    GateConfig,
    StudentConfig,
)
from condlabel.config.eval import (
    DEFAULT_OPPOSITES,
    ConditionalConfig,
    EvalConfig,
    GenerationSettings,
)
from condlabel.config.labelers import (
    CT2LabelerConfig,
    HFLabelerConfig,
    KeyphraseLabelerConfig,
    LabelerConfig,
    ModelSource,
    VLLMLabelerConfig,
)
from condlabel.config.load import (
    CONFIG_MODELS,
    apply_overrides,
    build_config,
    describe_fields,
    keys_help,
    load_config,
    load_convert_config,
    load_eval_config,
    load_mapping,
    load_storage_config,
    load_train_config,
    parse_override,
)
from condlabel.config.train import (
    DEFAULT_CONTROL_TOKENS,
    LoraTrainConfig,
    OptimizationBase,
    OptimizationConfig,
    TrainCheckpointConfig,
    TrainComputeConfig,
    TrainConfig,
    TrainDataConfig,
    TrainModelConfig,
)

__all__ = [
    "CONFIG_MODELS",
    "DEFAULT_CONTROL_TOKENS",
    "DEFAULT_OPPOSITES",
    "DEFAULT_PREFIX_TEMPLATE",
    "NONTOXIC_TOKENS",
    "PREFIX_FIELDS",
    "SENTIMENT_TOKENS",
    "TOXICITY_TOKENS",
    "CT2LabelerConfig",
    "ChunkConfig",
    "ClassifierConfig",
    "ComputeConfig",
    "ConditionalConfig",
    "ConfigError",
    "ConvertConfig",
    "DistillCheckpointConfig",
    "DistillConfig",
    "DistillDataConfig",
    "DistillOptimizationConfig",
    "EvalConfig",
    "FormatConfig",
    "GateConfig",
    "GenerationFields",
    "GenerationSettings",
    "HFClassifierConfig",
    "HFLabelerConfig",
    "InputConfig",
    "KeyphraseLabelerConfig",
    "LabelerConfig",
    "LoraTrainConfig",
    "ModelSource",
    "OptimizationBase",
    "OptimizationConfig",
    "OutputConfig",
    "RayConnection",
    "RunConfig",
    "Sentiment",
    "StorageConfig",
    "StrictModel",
    "StudentConfig",
    "TrainCheckpointConfig",
    "TrainComputeConfig",
    "TrainConfig",
    "TrainDataConfig",
    "TrainModelConfig",
    "VLLMLabelerConfig",
    "VaderClassifierConfig",
    "apply_overrides",
    "build_config",
    "describe_fields",
    "keys_help",
    "load_config",
    "load_convert_config",
    "load_eval_config",
    "load_mapping",
    "load_storage_config",
    "load_train_config",
    "parse_override",
]
