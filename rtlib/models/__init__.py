"""Backbones (B, L, d) -> (B, L, d), the task heads that wrap them, and `build_model`."""
from __future__ import annotations

from dataclasses import asdict
from typing import Any, Union

from torch import nn

from .heads import HeadConfig, LanguageModel, PianoRollModel, SequenceClassifier, TaskShape
from .local_rnn import LocalRNN
from .rnn import RNNConfig, RNNModel
from .rtransformer import RTransformer, RTransformerConfig
from .tcn import TCN, TCNConfig
from .transformer import Transformer, TransformerConfig

BackboneConfig = Union[RTransformerConfig, TransformerConfig, TCNConfig, RNNConfig]
# model name -> the config dataclass of its backbone
BACKBONE_CONFIGS: dict[str, type] = {"rtransformer": RTransformerConfig, "transformer": TransformerConfig,
                                     "tcn": TCNConfig, "rnn": RNNConfig, "gru": RNNConfig, "lstm": RNNConfig}
# models whose input features go through a Linear to d_model (as released); the others take
# the features as they are
PROJECT_INPUT = ("rtransformer", "transformer")
# the models with attention: the rows the paper's claims are about, and the ones an analysis
# can look into
ATTENTION_MODELS = ("rtransformer", "transformer")


def build_backbone(model: str, config: BackboneConfig, in_features: int | None) -> nn.Module:
    """The backbone named `model` with `config`; TCN and RNN configs without an input size take
    the task's `in_features` (an RNN language model: its hidden size)."""
    if model == "rtransformer":
        return RTransformer(config)
    if model == "transformer":
        return Transformer(config)
    settings = asdict(config)
    if model == "tcn":
        settings["input_size"] = in_features if config.input_size is None else config.input_size
        return TCN(**settings)
    if config.input_size is None:
        settings["input_size"] = config.hidden_size if in_features is None else in_features
    return RNNModel(cell=model, **settings)


def build_model(cfg: Any, shape: TaskShape) -> nn.Module:
    """The whole model of a run config (`rtlib.configs.RunConfig`: its model name, backbone
    config and head settings) for a task of `shape`."""
    backbone = build_backbone(cfg.model, cfg.backbone, shape.in_features)
    project = cfg.model in PROJECT_INPUT
    if shape.kind == "classify":
        return SequenceClassifier(backbone, shape.in_features, shape.out_features, project_input=project)
    if shape.kind == "music":
        return PianoRollModel(backbone, shape.out_features, project_input=project)
    return LanguageModel(backbone, shape.out_features, **asdict(cfg.head))


__all__ = ["ATTENTION_MODELS", "BACKBONE_CONFIGS", "BackboneConfig", "HeadConfig", "LanguageModel", "LocalRNN", "PianoRollModel",
           "RNNConfig", "RNNModel", "RTransformer", "RTransformerConfig", "SequenceClassifier", "TCN",
           "TCNConfig", "TaskShape", "Transformer", "TransformerConfig", "build_backbone", "build_model"]
