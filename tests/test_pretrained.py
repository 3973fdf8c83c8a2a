"""Hugging Face folders in and out: safetensors in NumPy, GPT-2 and LLaMA against transformers.

The safetensors and NumPy-only tests always run. The checks against transformers (tiny random
models it writes, loaded here; ours written, loaded there) need torch and transformers, and
skip with the reason when they are absent.

In float64, transformers' LLaMA computes three things in float32 all the same: LlamaRMSNorm
casts to float32, LlamaRotaryEmbedding computes its angles and tables in float32, and the
eager attention's softmax runs in float32. ``llama_in_float64`` patches those three to
float64 (and nothing else), so 1e-10 is a bound against float64 arithmetic. The loss is
computed in float64 on both sides here (transformers' ``labels=`` loss upcasts to float32).
"""

import json
import struct

import numpy as np
import pytest

from tinytransformer import (CrossEntropyLoss, DecoderOnlyTransformer, Transformer, TransformerConfig,
                             load_pretrained, save_pretrained)
from tinytransformer.pretrained import PretrainedError, SafetensorsError, read_safetensors, write_safetensors
from tinytransformer.pretrained import gpt2, llama
from tinytransformer.pretrained.namemap import rows_for, to_theirs
from tinytransformer.pretrained.safetensors import read_folder_tensors, read_header, write_sharded

B, T = 2, 11      # batch and length of the token ids the models are compared on


# ---- safetensors, in NumPy -----------------------------------------------------------------

def hand_built_parts(entries):
    """The header (a dict) and the data bytes of a safetensors file holding ``entries``,
    each (name, dtype tag, shape, raw little-endian bytes), one after another."""
    header, data = {}, b""
    for name, tag, shape, raw in entries:
        header[name] = {"dtype": tag, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    return header, data


def hand_built(entries):
    """A safetensors file's bytes: the header's length (8 bytes), the header, the data."""
    header, data = hand_built_parts(entries)
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


# every dtype the reader knows, as bytes written by hand, and the values they hold
HAND_BUILT = [
    ("f64", "F64", [2], struct.pack("<2d", 1.5, -0.1), np.array([1.5, -0.1])),
    ("f32", "F32", [1, 3], struct.pack("<3f", 0.25, -3.0, 1e-3), np.array([[0.25, -3.0, 1e-3]], np.float32)),
    ("f16", "F16", [2], struct.pack("<2e", 0.5, -65504.0), np.array([0.5, -65504.0], np.float16)),
    # bfloat16 is a float32's top 16 bits: 0x3F80 is 1.0, 0xC020 is -2.5, 0x4049 is 3.140625
    ("bf16", "BF16", [3], struct.pack("<3H", 0x3F80, 0xC020, 0x4049), np.array([1.0, -2.5, 3.140625], np.float32)),
    ("i64", "I64", [2], struct.pack("<2q", -(2 ** 40), 7), np.array([-(2 ** 40), 7])),
    ("i32", "I32", [2], struct.pack("<2i", -5, 2 ** 30), np.array([-5, 2 ** 30], np.int32)),
    ("i16", "I16", [1], struct.pack("<h", -300), np.array([-300], np.int16)),
    ("i8", "I8", [1], struct.pack("<b", -7), np.array([-7], np.int8)),
    ("u8", "U8", [2], bytes([0, 255]), np.array([0, 255], np.uint8)),
    ("bool", "BOOL", [2], bytes([1, 0]), np.array([True, False])),
    ("empty", "F32", [0, 4], b"", np.zeros((0, 4), np.float32)),
]


def test_safetensors_reads_hand_built_bytes_of_every_dtype(tmp_path):
    path = tmp_path / "hand.safetensors"
    path.write_bytes(hand_built([row[:4] for row in HAND_BUILT]))
    tensors = read_safetensors(path)
    assert list(tensors) == [row[0] for row in HAND_BUILT]
    for name, _, _, _, expected in HAND_BUILT:
        assert tensors[name].dtype == expected.dtype, name
        np.testing.assert_array_equal(tensors[name], expected, err_msg=name)


def test_safetensors_writes_the_same_bytes_as_built_by_hand(tmp_path):
    """The writer's tensors, offsets and data are those of the format (BF16 has no NumPy array
    to write); a big-endian array is written little-endian."""
    written = [row for row in HAND_BUILT if row[1] != "BF16"]
    arrays = {name: value for name, _, _, _, value in written}
    arrays["f64"] = arrays["f64"].astype(">f8")
    path = tmp_path / "ours.safetensors"
    write_safetensors(path, arrays, {"format": "pt"})
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    assert n % 8 == 0 and header.pop("__metadata__") == {"format": "pt"}
    expected_header, expected_data = hand_built_parts([row[:4] for row in written])
    assert header == expected_header
    assert raw[8 + n:] == expected_data


def test_safetensors_round_trip_is_memory_mapped_and_read_only(tmp_path, rng):
    arrays = {"w": rng.standard_normal((3, 5)), "v": rng.standard_normal(7).astype(np.float32)}
    write_safetensors(tmp_path / "x.safetensors", arrays)
    back = read_safetensors(tmp_path / "x.safetensors")
    for name, value in arrays.items():
        np.testing.assert_array_equal(back[name], value)
        assert isinstance(back[name].base, np.memmap) or isinstance(back[name], np.memmap)
        assert not back[name].flags.writeable


@pytest.mark.parametrize("damage, message", [
    (lambda raw: raw[:-1], "needs 24 bytes"),                                  # data cut short
    (lambda raw: struct.pack("<Q", 10 ** 6) + raw[8:], "header length"),       # N beyond the file
    (lambda raw: raw.replace(b'"F64"', b'"F65"'), "dtype 'F65'"),              # unknown dtype
    (lambda raw: raw[:5], "too short"),
])
def test_safetensors_damaged_files_are_clear_errors(tmp_path, damage, message):
    path = tmp_path / "x.safetensors"
    write_safetensors(path, {"w": np.arange(3.0)})
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(SafetensorsError, match=message):
        read_safetensors(path)


def test_safetensors_shards_and_their_index(tmp_path, rng):
    arrays = {f"t{k}": rng.standard_normal(10 + k) for k in range(5)}      # 80..112 bytes each
    files = write_sharded(tmp_path, arrays, max_shard_bytes=200)
    assert len(files) == 3
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(arrays)
    assert index["metadata"]["total_size"] == sum(a.nbytes for a in arrays.values())
    back = read_folder_tensors(tmp_path)
    for name, value in arrays.items():
        np.testing.assert_array_equal(back[name], value)


def test_safetensors_agrees_with_the_safetensors_package(tmp_path, rng):
    st = pytest.importorskip("safetensors.numpy", reason="the safetensors package is an optional reference")
    arrays = {"a": rng.standard_normal((2, 3)), "b": rng.standard_normal(4).astype(np.float16),
              "c": np.arange(5, dtype=np.int64), "d": rng.standard_normal((3, 1)).astype(np.float32)}
    write_safetensors(tmp_path / "ours.safetensors", arrays)
    st.save_file(arrays, str(tmp_path / "theirs.safetensors"))
    for read in (st.load_file(str(tmp_path / "ours.safetensors")), read_safetensors(tmp_path / "theirs.safetensors")):
        assert set(read) == set(arrays)
        for name, value in arrays.items():
            assert read[name].dtype == value.dtype
            np.testing.assert_array_equal(read[name], value)


def test_safetensors_bfloat16_agrees_with_torch(tmp_path):
    torch = pytest.importorskip("torch", reason="torch writes the reference bfloat16 file")
    st = pytest.importorskip("safetensors.torch", reason="the safetensors package writes the reference file")
    values = torch.randn(4, 6, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    st.save_file({"w": values}, str(tmp_path / "bf16.safetensors"))
    ours = read_safetensors(tmp_path / "bf16.safetensors")["w"]
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, values.float().numpy())