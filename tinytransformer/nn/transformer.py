"""The Transformer, gathered in one import: its pieces live one concern per file.

    config.py      TransformerConfig, PRESETS ("reference", "modern")
    masks.py       causal and padding masks
    layers.py      EncoderLayer, DecoderLayer (residual sublayers, pre-LN or post-LN)
    stacks.py      Encoder, Decoder
    models.py      Transformer, DecoderOnlyTransformer
    inference.py   decoding one step at a time over a KV cache (kv_cache.py)
"""

from .config import PRESETS, TransformerConfig, config_from_dict
from .layers import DecoderLayer, EncoderLayer
from .models import DecoderOnlyTransformer, Transformer
from .stacks import Decoder, Encoder

__all__ = ["TransformerConfig", "PRESETS", "config_from_dict", "EncoderLayer", "DecoderLayer", "Encoder", "Decoder",
           "Transformer", "DecoderOnlyTransformer"]
