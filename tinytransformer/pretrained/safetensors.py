"""The safetensors file format, read and written with NumPy alone.

A safetensors file is three things, one after another:

    8 bytes     N, the header's length: an unsigned 64-bit little-endian integer
    N bytes     the header: JSON, {"name": {"dtype": "F32", "shape": [3, 4],
                "data_offsets": [begin, end]}, ..., "__metadata__": {str: str}}
                (optionally padded with spaces)
    the rest    the tensors' bytes, row-major, little-endian; each tensor's
                [begin, end) counted from the first byte after the header

So reading is: unpack N, parse the JSON, and view each tensor's bytes as an array.
The arrays are views of one memory map of the file: nothing is read until it is used.
BF16 (bfloat16: the top 16 bits of a float32) has no NumPy dtype; it is widened to
float32 by shifting its bits into the high half of a 32-bit word (exact, and a copy).

A model too big for one file is split into shards beside a
``model.safetensors.index.json``: {"metadata": {"total_size": bytes},
"weight_map": {"tensor name": "file name"}}.
"""

from __future__ import annotations

import json
import os
import re
import struct

import numpy as np

from ..atomic import atomic_write, save_json

# safetensors dtype name -> the little-endian NumPy dtype its bytes hold
DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),      # the raw bits; widened to float32 by read_safetensors
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
# what the writer tags a NumPy array with (BF16 is only read: NumPy holds no bfloat16 array)
TAGS = {dtype.newbyteorder("<"): tag for tag, dtype in DTYPES.items() if tag != "BF16"}

INDEX_FILE = "model.safetensors.index.json"
SHARD_NAME = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")      # what write_sharded names a shard
HEADER_ALIGNMENT = 8          # the header is padded with spaces so the data starts aligned


class SafetensorsError(ValueError):
    """A file that is not valid safetensors, or a tensor this reader cannot hold."""


def bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
    """float32 values of bfloat16 ``bits`` (uint16): the same sign, exponent and top mantissa
    bits, the low 16 mantissa bits zero. Exact."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def read_header(path: str | os.PathLike) -> tuple[dict, int]:
    """The header's JSON (tensor name -> dtype, shape, data_offsets; and ``__metadata__``)
    and the byte position where the tensors' data starts."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise SafetensorsError(f"{path}: {len(head)} bytes, too short for a safetensors file "
                                   f"(8-byte header length first)")
        (n,) = struct.unpack("<Q", head)
        size = os.fstat(f.fileno()).st_size
        if 8 + n > size:
            raise SafetensorsError(f"{path}: the header length says {n} bytes but the file has "
                                   f"{size - 8} after the length")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise SafetensorsError(f"{path}: the header is not JSON ({e})") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: the header is JSON {type(header).__name__}, expected an object")
    return header, 8 + n


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file by name, as read-only arrays backed by a memory map.

    BF16 tensors come widened to float32 (a copy); every other dtype is a view of the file.
    """
    header, start = read_header(path)
    header.pop("__metadata__", None)
    data_size = os.path.getsize(path) - start
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=start) if data_size else np.empty(0, np.uint8)
    tensors = {}
    for name, entry in header.items():
        try:
            tag, shape, (begin, end) = entry["dtype"], tuple(entry["shape"]), entry["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise SafetensorsError(f"{path}: tensor {name!r}: expected dtype, shape and data_offsets "
                                   f"[begin, end] in the header, got {entry!r}") from None
        if tag not in DTYPES:
            raise SafetensorsError(f"{path}: tensor {name!r} has dtype {tag!r}; this reader knows "
                                   f"{', '.join(DTYPES)}")
        dtype = DTYPES[tag]
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if end - begin != expected or not 0 <= begin <= end <= data_size:
            raise SafetensorsError(f"{path}: tensor {name!r} ({tag} {list(shape)}) needs {expected} bytes, "
                                   f"its data_offsets [{begin}, {end}] give {end - begin} "
                                   f"(the data part holds {data_size})")
        array = data[begin:end].view(dtype).reshape(shape)            # no copy: a view of the map
        tensors[name] = bfloat16_to_float32(array) if tag == "BF16" else array
    return tensors


def write_safetensors(path: str | os.PathLike, tensors: dict[str, np.ndarray],
                      metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` (name -> array) to ``path``, each in its own dtype, in the order given.

    ``metadata`` (strings only) goes to the header's ``__metadata__``; transformers wants
    ``{"format": "pt"}`` there.
    """
    header: dict = {} if metadata is None else {"__metadata__": dict(metadata)}
    arrays, offset = [], 0
    for name, value in tensors.items():
        array = np.asarray(value)
        little = array.dtype.newbyteorder("<")
        if little not in TAGS:
            raise SafetensorsError(f"write_safetensors: tensor {name!r} has dtype {array.dtype}; "
                                   f"safetensors holds {', '.join(str(d) for d in TAGS)}")
        array = np.ascontiguousarray(array, dtype=little)
        header[name] = {"dtype": TAGS[little], "shape": list(array.shape),
                        "data_offsets": [offset, offset + array.nbytes]}
        arrays.append(array)
        offset += array.nbytes
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % HEADER_ALIGNMENT)

    def write(f):
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for array in arrays:
            f.write(array.tobytes())
    atomic_write(path, write)                 # the whole file or, after a kill, the old one


def read_folder_tensors(folder: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every tensor of a Hugging Face folder: ``model.safetensors``, or the shards its
    ``model.safetensors.index.json`` names (each tensor from the file the index gives)."""
    index_path = os.path.join(folder, INDEX_FILE)
    if not os.path.exists(index_path):
        single = os.path.join(folder, "model.safetensors")
        if not os.path.exists(single):
            raise FileNotFoundError(f"{folder}: no model.safetensors and no {INDEX_FILE} "
                                    f"(a PyTorch .bin checkpoint is not read here)")
        return read_safetensors(single)
    with open(index_path, encoding="utf-8") as f:
        weight_map = json.load(f)["weight_map"]                     # tensor name -> shard file
    shards = {file: read_safetensors(os.path.join(folder, file)) for file in sorted(set(weight_map.values()))}
    tensors = {}
    for name, file in weight_map.items():
        if name not in shards[file]:
            raise SafetensorsError(f"{index_path}: tensor {name!r} is mapped to {file}, which does not "
                                   f"hold it")
        tensors[name] = shards[file][name]
    return tensors


def write_sharded(folder: str | os.PathLike, tensors: dict[str, np.ndarray], max_shard_bytes: int,
                  metadata: dict[str, str] | None = None) -> list[str]:
    """Write ``tensors`` as shards of at most ``max_shard_bytes`` each (a tensor bigger than that
    gets a shard of its own) named ``model-0000k-of-0000n.safetensors``, and the index beside them.
    Returns the shard file names."""
    groups: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name, array in tensors.items():
        if groups[-1] and size + array.nbytes > max_shard_bytes:
            groups.append({})
            size = 0
        groups[-1][name] = array
        size += array.nbytes
    files = [f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors" for k in range(len(groups))]
    weight_map = {}
    for file, group in zip(files, groups):
        write_safetensors(os.path.join(folder, file), group, metadata)
        weight_map.update(dict.fromkeys(group, file))
    index = {"metadata": {"total_size": sum(a.nbytes for a in tensors.values())}, "weight_map": weight_map}
    save_json(os.path.join(folder, INDEX_FILE), index)
    return files
