"""Backbones (B, L, d) -> (B, L, d) and the task heads that wrap them."""
from .heads import LanguageModel, PianoRollModel, SequenceClassifier
from .local_rnn import LocalRNN
from .rnn import RNNModel
from .rtransformer import RTransformer, RTransformerConfig
from .tcn import TCN
from .transformer import Transformer, TransformerConfig

__all__ = ["LanguageModel", "LocalRNN", "PianoRollModel", "RNNModel", "RTransformer",
           "RTransformerConfig", "SequenceClassifier", "TCN", "Transformer", "TransformerConfig"]
