"""Pre-trained decoders: Hugging Face GPT-2 and LLaMA folders in and out, in NumPy.

``load_pretrained(folder, dtype)`` opens one as a DecoderOnlyTransformer;
``save_pretrained(model, folder)`` writes one that transformers loads. The name tables
are in gpt2.py and llama.py; the safetensors format is read and written in safetensors.py.
"""

from .load import load_pretrained
from .namemap import PretrainedError
from .safetensors import SafetensorsError, read_safetensors, write_safetensors
from .save import save_pretrained

__all__ = ["load_pretrained", "save_pretrained", "PretrainedError", "SafetensorsError",
           "read_safetensors", "write_safetensors"]
