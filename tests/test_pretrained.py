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
from typing import NamedTuple

import numpy as np
import pytest

from tinytransformer import (BPETokenizer, CrossEntropyLoss, DecoderOnlyTransformer, Transformer,
                             TransformerConfig, add_lora, load_pretrained, load_tokenizer, save_pretrained)
from tinytransformer.pretrained import PretrainedError, SafetensorsError, read_safetensors, write_safetensors
from tinytransformer.pretrained import gpt2, llama
from tinytransformer.checkpoint import model_generators
from tinytransformer.pretrained.load import Undrawn
from tinytransformer.pretrained.namemap import rows_for
from tinytransformer.pretrained.save import hf_tensors
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
    ("bf16", "BF16", [3], struct.pack("<3H", 0x3F80, 0xC020, 0x4049),
     np.array([1.0, -2.5, 3.140625], np.float32)),
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
    (lambda raw: raw.replace(b'"shape"', b'"shapE"'), "expected dtype, shape and data_offsets"),
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
    for read in (st.load_file(str(tmp_path / "ours.safetensors")),
                 read_safetensors(tmp_path / "theirs.safetensors")):
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

# ---- models written here: save_pretrained and load_pretrained, NumPy only ---------------------

# GPT-2- and LLaMA-shaped configs of models made here; sizes that cannot coincide
OUR_CONFIGS = {
    "gpt2_untied": dict(vocab_size=61, d_model=40, n_heads=4, d_ff=56, max_len=20, positional="learned",
                        activation="gelu_tanh", norm="layernorm", norm_eps=1e-4, tie_embeddings=False,
                        pad_id=None, bos_id=0, eos_id=0),
    "llama_gqa_bias": dict(vocab_size=67, d_model=48, n_heads=6, n_kv_heads=2, d_ff=40, max_len=20,
                           positional="rope", rope_base=300.0, activation="swiglu", norm="rmsnorm",
                           norm_eps=1e-6, bias=True, tie_embeddings=True, pad_id=0, bos_id=1, eos_id=2),
}


def our_model(name, dtype=np.float64, seed=0):
    """A model of OUR_CONFIGS[name] with every parameter moved off its initial value (norm
    weights off 1, biases off 0), so a parameter written to the wrong place shows."""
    rng = np.random.default_rng(seed)
    config = TransformerConfig(n_encoder_layers=0, n_decoder_layers=2, head_bias=False, embed_scale=False,
                               **OUR_CONFIGS[name])
    model = DecoderOnlyTransformer(config, rng=rng, dtype=dtype)
    for _, param, _ in model.named_parameters():
        param += 0.1 * rng.standard_normal(param.shape)
    return model


def token_ids(vocab_size, seed=0):
    """(B, T) ids from 3 up: never a pad id (0 where there is one), so no key is masked."""
    return np.random.default_rng(seed).integers(3, vocab_size, size=(B, T))


def assert_same_parameters(ours, theirs):
    a = {name: p for name, p, _ in ours.named_parameters()}
    b = {name: p for name, p, _ in theirs.named_parameters()}
    assert list(a) == list(b)
    for name in a:
        assert b[name].dtype == a[name].dtype, name
        np.testing.assert_array_equal(b[name], a[name], err_msg=name)


@pytest.mark.parametrize("name", list(OUR_CONFIGS))
def test_save_then_load_gives_the_same_model(tmp_path, name):
    model = our_model(name)
    save_pretrained(model, tmp_path)
    header, _ = read_header(tmp_path / "model.safetensors")
    assert {entry["dtype"] for key, entry in header.items() if key != "__metadata__"} == {"F64"}
    back = load_pretrained(tmp_path, dtype=np.float64)
    assert back.config == model.config
    assert_same_parameters(model, back)
    ids = token_ids(model.config.vocab_size)
    np.testing.assert_array_equal(back(ids), model(ids))


def test_load_converts_to_the_dtype_asked_for(tmp_path):
    model = our_model("llama_gqa_bias")
    save_pretrained(model, tmp_path)
    back = load_pretrained(tmp_path)                       # float32 by default
    assert {p.dtype for _, p, _ in back.named_parameters()} == {np.dtype(np.float32)}
    np.testing.assert_array_equal(back.embed.params["weight"],
                                  model.embed.params["weight"].astype(np.float32))


def test_the_loader_builds_its_model_without_drawing_weights(tmp_path):
    """load_pretrained builds the model from an Undrawn Generator, as every parameter is then
    overwritten: no random number is drawn, every drawn matrix (embeddings, projections)
    starts at zero, the model's dtype is kept, and the Generator's other methods (a Dropout's
    masks) are a real Generator's."""
    rng = Undrawn(np.random.PCG64(3))
    state = rng.bit_generator.state
    config = TransformerConfig(n_encoder_layers=0, n_decoder_layers=2, **OUR_CONFIGS["gpt2_untied"])
    model = DecoderOnlyTransformer(config, rng=rng, dtype=np.float64)
    assert rng.bit_generator.state == state
    params = [p for _, p, _ in model.named_parameters()]
    assert {p.dtype for p in params} == {np.dtype(np.float64)}
    matrices = [p for p in params if p.ndim == 2]
    assert len(matrices) == 2 + 2 * 6 + 1 and not any(p.any() for p in matrices)   # embeddings, layers, head
    np.testing.assert_array_equal(rng.random(4), np.random.default_rng(np.random.PCG64(3)).random(4))
    save_pretrained(our_model("gpt2_untied"), tmp_path)
    generators = model_generators(load_pretrained(tmp_path))
    assert generators and all(isinstance(g, Undrawn) for g in generators)


def test_sharded_save_loads(tmp_path):
    model = our_model("gpt2_untied")
    save_pretrained(model, tmp_path, max_shard_bytes=20_000)
    assert not (tmp_path / "model.safetensors").exists()
    assert len(list(tmp_path.glob("model-*-of-*.safetensors"))) > 2
    assert_same_parameters(model, load_pretrained(tmp_path, dtype=np.float64))


def test_saving_again_removes_the_other_layout(tmp_path):
    """A single file saved over shards (or shards over a single file) leaves no stale weights."""
    model, other = our_model("gpt2_untied"), our_model("gpt2_untied", seed=1)
    save_pretrained(model, tmp_path, max_shard_bytes=20_000)
    save_pretrained(other, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    assert_same_parameters(other, load_pretrained(tmp_path, dtype=np.float64))
    save_pretrained(model, tmp_path, max_shard_bytes=20_000)
    assert not (tmp_path / "model.safetensors").exists()
    assert_same_parameters(model, load_pretrained(tmp_path, dtype=np.float64))


@pytest.mark.parametrize("shards", [None, 20_000])
def test_a_save_interrupted_while_writing_weights_leaves_the_earlier_model(tmp_path, monkeypatch, shards):
    """Each file is written whole, and the old weights go only after the new ones are in place."""
    import tinytransformer.pretrained.safetensors as format_module
    model, other = our_model("gpt2_untied"), our_model("gpt2_untied", seed=1)
    save_pretrained(model, tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    real = format_module.atomic_write

    def interrupted(path, write):
        def half(f):
            f.write(b"12345678")                      # a few bytes, then Ctrl-C
            raise KeyboardInterrupt
        return real(path, half)
    monkeypatch.setattr(format_module, "atomic_write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_pretrained(other, tmp_path, max_shard_bytes=shards)
    assert sorted(p.name for p in tmp_path.iterdir()) == before      # no half file, nothing removed
    assert_same_parameters(model, load_pretrained(tmp_path, dtype=np.float64))


def test_hub_style_gpt2_file_without_prefix_and_with_mask_buffers(tmp_path):
    """The hub's GPT-2 files name tensors without "transformer." and hold each block's causal
    mask ("attn.bias") and fill value ("attn.masked_bias"), which are not parameters."""
    model = our_model("gpt2_untied")
    save_pretrained(model, tmp_path)
    tensors = {name.removeprefix("transformer."): np.array(t)
               for name, t in read_safetensors(tmp_path / "model.safetensors").items()}
    for i in range(2):
        tensors[f"h.{i}.attn.bias"] = np.tril(np.ones((1, 1, 20, 20), np.float32))
        tensors[f"h.{i}.attn.masked_bias"] = np.array(-1e4, np.float32)
    write_safetensors(tmp_path / "model.safetensors", tensors, {"format": "pt"})
    assert_same_parameters(model, load_pretrained(tmp_path, dtype=np.float64))


def test_tied_checkpoint_holding_lm_head_loads_when_equal_and_is_refused_otherwise(tmp_path):
    model = our_model("llama_gqa_bias")
    save_pretrained(model, tmp_path)
    tensors = {name: np.array(t) for name, t in read_safetensors(tmp_path / "model.safetensors").items()}
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].copy()
    write_safetensors(tmp_path / "model.safetensors", tensors, {"format": "pt"})
    assert_same_parameters(model, load_pretrained(tmp_path, dtype=np.float64))
    tensors["lm_head.weight"][0, 0] += 1.0
    write_safetensors(tmp_path / "model.safetensors", tensors, {"format": "pt"})
    with pytest.raises(PretrainedError, match="'lm_head.weight' differs from the token embedding"):
        load_pretrained(tmp_path)


def edit_config(folder, **changes):
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def test_config_numbers_are_read(tmp_path):
    """rope_theta at the top level (older files) or in rope_parameters; eps; special ids
    (a pad id that is also eos gives no pad id: every eos would be masked)."""
    save_pretrained(our_model("llama_gqa_bias"), tmp_path)
    edit_config(tmp_path, rope_parameters=None, rope_theta=1234.0, rms_norm_eps=3e-5, pad_token_id=None,
                eos_token_id=[5, 6], bos_token_id=None)
    config = load_pretrained(tmp_path).config
    assert (config.rope_base, config.norm_eps, config.pad_id, config.bos_id, config.eos_id) == \
        (1234.0, 3e-5, None, None, 5)
    edit_config(tmp_path, rope_parameters={"rope_type": "default", "rope_theta": 99.0}, pad_token_id=5)
    config = load_pretrained(tmp_path).config
    assert (config.rope_base, config.pad_id) == (99.0, None)


def test_absent_keys_mean_what_transformers_assumes():
    """GPT-2: n_inner None is 4 * n_embd, the activation gelu_new (tanh), eps 1e-5, a tied head;
    LLaMA: as many key/value heads as heads, rope_theta 10000, eps 1e-6, an untied head."""
    config = gpt2.config_from_hf(dict(model_type="gpt2", vocab_size=50, n_embd=40, n_head=4, n_layer=1,
                                      n_inner=None, bos_token_id=7, eos_token_id=7))
    assert (config.d_ff, config.activation, config.norm_eps, config.tie_embeddings, config.max_len) == \
        (160, "gelu_tanh", 1e-5, True, 1024)
    assert (config.pad_id, config.bos_id, config.eos_id, config.head_bias, config.embed_scale) == \
        (None, 7, 7, False, False)
    config = llama.config_from_hf(dict(model_type="llama", vocab_size=50, hidden_size=48,
                                       intermediate_size=40, num_attention_heads=6, num_hidden_layers=1))
    assert (config.kv_heads, config.rope_base, config.norm_eps, config.tie_embeddings, config.bias) == \
        (6, 10000.0, 1e-6, False, False)
    assert (config.pad_id, config.bos_id, config.eos_id) == (None, 1, 2)


@pytest.mark.parametrize("name, changes, message", [
    ("llama_gqa_bias", dict(rope_scaling={"rope_type": "linear", "factor": 2.0}),
     "rope_scaling of type 'linear'"),
    ("llama_gqa_bias", dict(rope_parameters={"rope_type": "llama3", "rope_theta": 5e5}), "type 'llama3'"),
    ("llama_gqa_bias", dict(model_type="mistral"), "model_type 'mistral' is not supported"),
    ("llama_gqa_bias", dict(sliding_window=8), "sliding_window 8"),
    ("llama_gqa_bias", dict(mlp_bias=False), "attention_bias=True with mlp_bias=False"),
    ("llama_gqa_bias", dict(hidden_act="gelu"), "hidden_act 'gelu'"),
    ("llama_gqa_bias", dict(head_dim=16), "head_dim 16"),
    ("gpt2_untied", dict(activation_function="relu"), "activation_function 'relu'"),
    ("gpt2_untied", dict(scale_attn_by_inverse_layer_idx=True), "scale_attn_by_inverse_layer_idx=True"),
    ("gpt2_untied", dict(reorder_and_upcast_attn=True), "reorder_and_upcast_attn=True"),
    ("gpt2_untied", dict(n_inner=64),
     r"'h.0.mlp.c_fc.weight' has shape \[40, 56\], but the config gives \[40, 64\]"),
    ("gpt2_untied", dict(tie_word_embeddings=True), "'lm_head.weight' differs from the token embedding"),
    ("llama_gqa_bias", dict(attention_bias=False, mlp_bias=False),
     "tensors the config does not describe: layers.0.mlp.down_proj.bias"),
])
def test_unsupported_or_inconsistent_configs_are_refused(tmp_path, name, changes, message):
    save_pretrained(our_model(name), tmp_path)
    edit_config(tmp_path, **changes)
    with pytest.raises(PretrainedError, match=message):
        load_pretrained(tmp_path)


def test_missing_tensor_is_named(tmp_path):
    save_pretrained(our_model("llama_gqa_bias"), tmp_path)
    tensors = dict(read_safetensors(tmp_path / "model.safetensors"))
    del tensors["model.layers.1.mlp.up_proj.bias"]
    write_safetensors(tmp_path / "model.safetensors", {k: np.array(v) for k, v in tensors.items()})
    with pytest.raises(PretrainedError, match="'layers.1.mlp.up_proj.bias' is missing"):
        load_pretrained(tmp_path)


def test_models_with_no_equivalent_are_refused_and_nothing_is_written(tmp_path):
    gpt2_like = dict(OUR_CONFIGS["gpt2_untied"], n_encoder_layers=0, head_bias=False, embed_scale=False)
    refused = {
        "encoder-decoder": Transformer(TransformerConfig(vocab_size=13), np.random.default_rng(0)),
        "positional 'sinusoidal'": DecoderOnlyTransformer(TransformerConfig(vocab_size=13,
                                                                            n_encoder_layers=0)),
        "norm_first=False": DecoderOnlyTransformer(TransformerConfig(**dict(gpt2_like, norm_first=False))),
        "activation 'relu'": DecoderOnlyTransformer(TransformerConfig(**dict(gpt2_like, activation="relu"))),
        "head_bias=True": DecoderOnlyTransformer(TransformerConfig(**dict(gpt2_like, head_bias=True))),
        "embed_scale=True": DecoderOnlyTransformer(TransformerConfig(**dict(gpt2_like, embed_scale=True))),
        "norm 'layernorm'": DecoderOnlyTransformer(TransformerConfig(
            **dict(OUR_CONFIGS["llama_gqa_bias"], norm="layernorm", head_bias=False, embed_scale=False))),
    }
    for k, (reason, model) in enumerate(refused.items()):
        with pytest.raises(PretrainedError, match=reason):
            save_pretrained(model, tmp_path / str(k))
        assert not (tmp_path / str(k)).exists()


def test_lora_adapters_must_be_merged_first(tmp_path):
    model = add_lora(our_model("llama_gqa_bias"), rank=2, rng=np.random.default_rng(1))
    with pytest.raises(PretrainedError, match="merge_lora"):
        save_pretrained(model, tmp_path)


def test_tokenizer_is_saved_beside(tmp_path):
    """save_pretrained calls the tokenizer's save(path); load_tokenizer reads it back."""
    text = "the cat sat on the mat; the cat ate the rat."
    tokenizer = BPETokenizer.train(text, vocab_size=262)
    save_pretrained(our_model("gpt2_untied"), tmp_path, tokenizer=tokenizer)
    assert (tmp_path / "vocab.json").exists() and (tmp_path / "config.json").exists()
    assert load_tokenizer(tmp_path).encode(text) == tokenizer.encode(text)


# ---- against transformers -------------------------------------------------------------------

# tiny random models transformers writes: sizes that cannot coincide, GQA and MQA, tied and
# untied heads, biases, every number away from its default so a number not read shows
HF_CONFIGS = {
    "gpt2_tied": ("GPT2Config", dict(vocab_size=101, n_embd=48, n_layer=2, n_head=4, n_positions=24,
                                     n_inner=80, layer_norm_epsilon=1e-4, bos_token_id=0, eos_token_id=0)),
    "llama_gqa_tied": ("LlamaConfig", dict(vocab_size=97, hidden_size=48, intermediate_size=72,
                                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                           max_position_embeddings=24, rope_theta=500.0, rms_norm_eps=1e-5,
                                           tie_word_embeddings=True)),
    "llama_mqa_untied_bias": ("LlamaConfig", dict(vocab_size=89, hidden_size=40, intermediate_size=56,
                                                  num_hidden_layers=2, num_attention_heads=4,
                                                  num_key_value_heads=1, max_position_embeddings=24,
                                                  rms_norm_eps=1e-4, tie_word_embeddings=False,
                                                  attention_bias=True, mlp_bias=True)),
}


class Reference(NamedTuple):
    """torch and transformers, and the two things every comparison asks of them."""
    torch: object
    transformers: object

    def model(self, folder, dtype):
        """The folder's model in transformers, in ``dtype``, with the plain (eager) attention."""
        return self.transformers.AutoModelForCausalLM.from_pretrained(
            folder, dtype=getattr(self.torch, np.dtype(dtype).name), attn_implementation="eager").eval()

    def logits(self, folder, dtype, ids):
        with self.torch.no_grad():
            return self.model(folder, dtype)(self.torch.from_numpy(ids)).logits.numpy()


@pytest.fixture(scope="module")
def ref():
    torch = pytest.importorskip("torch", reason="torch runs the reference models (optional test dependency)")
    transformers = pytest.importorskip("transformers", reason="transformers is the reference "
                                                              "(optional test dependency)")
    return Reference(torch, transformers)


@pytest.fixture(scope="module")
def hf_folders(ref, tmp_path_factory):
    """name -> a folder transformers' save_pretrained wrote, of a random model (seeded) whose
    every parameter is moved off its initial value (norm weights off 1, biases off 0)."""
    torch, transformers = ref
    folders = {}
    for k, (name, (config_class, sizes)) in enumerate(HF_CONFIGS.items()):
        torch.manual_seed(k)
        model = transformers.AutoModelForCausalLM.from_config(getattr(transformers, config_class)(**sizes))
        with torch.no_grad():
            for param in model.parameters():
                param.add_(0.1 * torch.randn_like(param))
        folders[name] = tmp_path_factory.mktemp(name)
        model.save_pretrained(folders[name])
    return folders


@pytest.fixture
def llama_in_float64(monkeypatch, ref):
    """transformers' LLaMA with its three float32 parts in float64: RMSNorm without the cast,
    rotary angles from float64 inverse frequencies, the eager softmax in its input's dtype."""
    torch = ref.torch
    from transformers.models.llama import modeling_llama

    def rms_norm(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))

    def rotary(self, x, position_ids):
        dim = 2 * self.inv_freq.shape[0]
        base = self.config.rope_parameters["rope_theta"]
        inv_freq = 1.0 / base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
        angles = position_ids[..., None].double() * inv_freq
        angles = torch.cat((angles, angles), dim=-1)
        return angles.cos().to(x.dtype), angles.sin().to(x.dtype)

    softmax = torch.nn.functional.softmax

    def softmax_in_input_dtype(x, dim=None, dtype=None, **kwargs):
        return softmax(x, dim=dim, dtype=x.dtype if x.dtype == torch.float64 else dtype, **kwargs)

    monkeypatch.setattr(modeling_llama.LlamaRMSNorm, "forward", rms_norm)
    monkeypatch.setattr(modeling_llama.LlamaRotaryEmbedding, "forward", rotary)
    monkeypatch.setattr(torch.nn.functional, "softmax", softmax_in_input_dtype)


@pytest.mark.parametrize("name", list(HF_CONFIGS))
def test_their_model_loads_with_the_same_logits(ref, hf_folders, llama_in_float64, name):
    for dtype, bound in ((np.float64, 1e-10), (np.float32, 1e-4)):
        ours = load_pretrained(hf_folders[name], dtype=dtype)
        ids = token_ids(ours.config.vocab_size)
        logits = ours(ids)
        assert logits.dtype == dtype
        np.testing.assert_allclose(logits, ref.logits(hf_folders[name], dtype, ids), rtol=0, atol=bound)


def our_loss_and_gradients(model, ids):
    """Mean cross-entropy of predicting ids[:, 1:] from the logits before them, and every
    parameter's gradient of it, by our name."""
    model.zero_grad()
    logits = model(ids)                                       # (B, T, V)
    loss_fn = CrossEntropyLoss()
    loss = loss_fn(logits[:, :-1], ids[:, 1:])
    dlogits = np.zeros_like(logits)
    dlogits[:, :-1] = loss_fn.backward()                      # the last position predicts nothing
    model.backward(dlogits)
    return loss, {name: grad for name, _, grad in model.named_parameters()}


@pytest.mark.parametrize("name", list(HF_CONFIGS))
def test_loss_and_every_gradient_equal_theirs_in_float64(ref, hf_folders, llama_in_float64, name):
    torch = ref.torch
    ours = load_pretrained(hf_folders[name], dtype=np.float64)
    ids = token_ids(ours.config.vocab_size, seed=1)
    loss, grads = our_loss_and_gradients(ours, ids)

    theirs = ref.model(hf_folders[name], np.float64)
    logits = theirs(torch.from_numpy(ids)).logits                         # float64 throughout
    log_probs = torch.log_softmax(logits[:, :-1], dim=-1)
    their_loss = -log_probs.gather(-1, torch.from_numpy(ids[:, 1:, None])).mean()
    their_loss.backward()
    assert abs(loss - their_loss.item()) < 1e-9

    family = gpt2 if name.startswith("gpt2") else llama
    mapped = hf_tensors(family, rows_for(family.TABLE, ours.config), grads)
    their_grads = {n: p.grad.numpy() for n, p in theirs.named_parameters()}
    assert set(mapped) == set(their_grads)
    for n, grad in mapped.items():
        np.testing.assert_allclose(grad, their_grads[n], rtol=0, atol=1e-9, err_msg=n)


@pytest.mark.parametrize("name", list(OUR_CONFIGS))
def test_our_export_loads_in_transformers_with_the_same_logits(ref, llama_in_float64, tmp_path, name):
    """In float64 as one file, in float32 as shards."""
    for dtype, bound, shard in ((np.float64, 1e-10, None), (np.float32, 1e-4, 30_000)):
        model = our_model(name, dtype=dtype)
        save_pretrained(model, tmp_path / np.dtype(dtype).name, max_shard_bytes=shard)
        ids = token_ids(model.config.vocab_size)
        expected = ref.logits(tmp_path / np.dtype(dtype).name, dtype, ids)
        np.testing.assert_allclose(model(ids), expected, rtol=0, atol=bound)


@pytest.mark.parametrize("storage, tag", [("float16", "F16"), ("bfloat16", "BF16")])
def test_half_precision_and_sharded_files_written_by_transformers_load(ref, hf_folders, llama_in_float64,
                                                                       tmp_path, storage, tag):
    torch, transformers = ref
    model = transformers.AutoModelForCausalLM.from_pretrained(hf_folders["llama_gqa_tied"])
    model.to(getattr(torch, storage)).save_pretrained(tmp_path, max_shard_size="20KB")
    shards = sorted(tmp_path.glob("model-*-of-*.safetensors"))
    assert len(shards) > 1 and (tmp_path / "model.safetensors.index.json").exists()
    assert {entry["dtype"] for k, entry in read_header(shards[0])[0].items() if k != "__metadata__"} == {tag}
    ours = load_pretrained(tmp_path, dtype=np.float64)
    ids = token_ids(ours.config.vocab_size)
    np.testing.assert_allclose(ours(ids), ref.logits(tmp_path, np.float64, ids), rtol=0, atol=1e-10)
