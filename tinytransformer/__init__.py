"""tinytransformer: the Transformer in pure NumPy, every backward pass written by hand.

The layers and models live in ``tinytransformer.nn``; training, decoding and
checkpoints in the modules of the same names; plots in ``tinytransformer.plot``
(imported on demand, so importing the package does not load matplotlib); graded
backward-pass exercises in ``tinytransformer.exercises`` (``EXERCISES``, ``check``,
``reference``, ``stub``).

Importing the package changes no process-wide setting. Where it computes, it
holds NumPy's BLAS to one thread for the duration of the call (``threads``, in
``tinytransformer/threads.py``), whatever the import order.
"""

from . import exercises
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .decode import KVCache, beam_search, generate, greedy_decode, sequence_log_prob
from .gradcheck import check_all, gradcheck
from .nn import *  # noqa: F401,F403  (the layers are the public API)
from .nn import __all__ as _nn_all
from .nn.transformer import (PRESETS, Decoder, DecoderLayer, DecoderOnlyTransformer, Encoder,
                             EncoderLayer, Transformer, TransformerConfig)
from .open import open_model
from .optim import SGD, Adam, AdamW, clip_grad_norm, warmup_inverse_sqrt
from .pretrained import load_pretrained, save_pretrained
from .tasks import BOS, EOS, PAD, Vocab, eval_set, make_batch
from .text import bits_per_char, default_corpus, load_text
from .text_task import TEXT_DEFAULTS, TextTask, text_train_config
from .threads import threads
from .tokenizers import BPETokenizer, ByteTokenizer, CharTokenizer, load_tokenizer
from .train import TrainConfig, TrainResult, evaluate, train
from .train_config import LORA_ALPHA, LORA_TARGETS

__version__ = "0.1.0"
__all__ = list(_nn_all) + [
    "EncoderLayer", "DecoderLayer", "Encoder", "Decoder", "Transformer", "DecoderOnlyTransformer",
    "TransformerConfig", "PRESETS", "gradcheck", "check_all", "SGD", "Adam", "AdamW", "clip_grad_norm",
    "warmup_inverse_sqrt", "PAD", "BOS", "EOS", "Vocab", "make_batch", "eval_set",
    "greedy_decode", "beam_search", "generate", "sequence_log_prob", "KVCache",
    "save_checkpoint", "load_checkpoint", "CheckpointError",
    "TrainConfig", "TrainResult", "train", "evaluate", "threads", "exercises",
    "CharTokenizer", "ByteTokenizer", "BPETokenizer", "load_tokenizer",
    "load_pretrained", "save_pretrained",
    "LORA_TARGETS", "LORA_ALPHA",
    "bits_per_char", "default_corpus", "load_text", "TEXT_DEFAULTS", "TextTask", "text_train_config",
    "open_model",
]
