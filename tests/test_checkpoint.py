"""Checkpoints: round trip, resuming state, atomic writes, clear errors for broken or mismatched files."""

import json
import os

import numpy as np
import pytest

from tinytransformer import add_lora, checkpoint
from tinytransformer.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tinytransformer.finetune import freeze
from tinytransformer.nn.lora import lora_layers
from tinytransformer.nn.transformer import DecoderOnlyTransformer, Transformer, TransformerConfig
from tinytransformer.optim import Adam


def small_config(**overrides):
    return TransformerConfig(**{"vocab_size": 13, "d_model": 16, "n_heads": 2, "d_ff": 24,
                                "n_encoder_layers": 1, "n_decoder_layers": 2, "max_len": 12,
                                **overrides})


def ids(rng, shape):
    out = rng.integers(3, 13, shape)
    out[0, -2:] = 0                      # some padding, so masks matter
    return out


def trained_a_little(model, rng, steps=3):
    """A model and Adam optimizer with non-trivial moments."""
    opt = Adam(model, lr=1e-2)
    for _ in range(steps):
        model.zero_grad()
        if isinstance(model, Transformer):
            logits = model(ids(rng, (3, 5)), ids(rng, (3, 4)))
        else:
            logits = model(ids(rng, (3, 6)))
        model.backward(rng.standard_normal(logits.shape).astype(np.float32))
        opt.step()
    return opt


@pytest.mark.parametrize("cls,tie", [(Transformer, False), (Transformer, True),
                                     (DecoderOnlyTransformer, True)])
def test_round_trip_gives_the_same_logits(tmp_path, rng, cls, tie):
    model = cls(small_config(tie_embeddings=tie), rng=np.random.default_rng(3))
    opt = trained_a_little(model, rng)
    path = save_checkpoint(tmp_path / "run", model, opt, step=3, task={"name": "copy"})
    assert path == tmp_path / "run" / "last.npz"

    loaded, info = load_checkpoint(tmp_path / "run")
    assert type(loaded) is cls and info["model_class"] == cls.__name__
    assert info["config"] == model.config and info["step"] == 3 and info["task"] == {"name": "copy"}
    model.eval(), loaded.eval()
    inputs = (ids(rng, (2, 5)), ids(rng, (2, 4))) if cls is Transformer else (ids(rng, (2, 6)),)
    np.testing.assert_array_equal(loaded(*inputs), model(*inputs))
    if tie:   # the tied matrix is stored once and comes back tied
        names = [name for name, _, _ in loaded.named_parameters()]
        assert not any(n.startswith(("src_embed", "out_proj.weight")) for n in names)
        embed = loaded.tgt_embed if cls is Transformer else loaded.embed
        assert np.shares_memory(loaded.out_proj.params["weight"], embed.params["weight"])

    opt2 = Adam(loaded, lr=1e-2)
    opt2.load_state_dict(info["optimizer"])
    assert opt2.step_count == opt.step_count
    for kind in ("exp_avg", "exp_avg_sq"):
        for a, b in zip(opt.buffers[kind], opt2.buffers[kind]):
            np.testing.assert_array_equal(a, b)


def test_random_states_round_trip_exactly(tmp_path):
    """PCG64 states are 128-bit integers: JSON must carry them exactly."""
    model = Transformer(small_config(dropout=0.3), rng=np.random.default_rng(7))
    data_rng = np.random.default_rng(11)
    data_rng.random(5)
    model_rng = checkpoint.model_generators(model)
    assert len(model_rng) == 1
    model_rng[0].random(3)
    save_checkpoint(tmp_path / "c.npz", model, rng_states={"data": data_rng.bit_generator.state})
    expected_data, expected_model = data_rng.random(4), model_rng[0].random(4)

    loaded, info = load_checkpoint(tmp_path / "c.npz")
    restored = np.random.default_rng(0)
    restored.bit_generator.state = info["rng_states"]["data"]
    np.testing.assert_array_equal(restored.random(4), expected_data)
    np.testing.assert_array_equal(checkpoint.model_generators(loaded)[0].random(4), expected_model)


def test_run_directory_prefers_best_and_which_picks(tmp_path):
    model = Transformer(small_config(), rng=np.random.default_rng(0))
    save_checkpoint(tmp_path / "last.npz", model, step=7)
    assert load_checkpoint(tmp_path)[1]["step"] == 7
    save_checkpoint(tmp_path / "best.npz", model, step=5)
    assert load_checkpoint(tmp_path)[1]["step"] == 5
    assert load_checkpoint(tmp_path, which="last")[1]["step"] == 7
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nothing-here")


def test_interrupted_write_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    model = Transformer(small_config(), rng=np.random.default_rng(0))
    save_checkpoint(tmp_path, model, step=1)
    before = (tmp_path / "last.npz").read_bytes()

    def failing_savez(file, **arrays):
        file.write(b"PK\x03\x04 half a zip")        # some bytes reach the disk, then the crash
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", failing_savez)
    for p in model.parameters():
        p += 1.0
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, model, step=2)
    assert os.listdir(tmp_path) == ["last.npz"]           # no temporary file left behind
    assert (tmp_path / "last.npz").read_bytes() == before
    assert load_checkpoint(tmp_path)[1]["step"] == 1


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_corrupted_checkpoint_is_a_clear_error(tmp_path, damage):
    model = Transformer(small_config(), rng=np.random.default_rng(0))
    path = save_checkpoint(tmp_path / "c.npz", model)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[:len(data) * 2 // 3]
    elif damage == "flip":                                # inside a parameter's bytes (not a header
        weight = model.out_proj.params["weight"].tobytes()   # field, which no check covers)
        data[data.find(weight) + len(weight) // 2] ^= 0xFF
    else:
        data = bytearray(b"not a checkpoint at all")
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupted or truncated"):
        load_checkpoint(path)


def test_loading_into_a_different_config_names_the_differences(tmp_path):
    model = Transformer(small_config(), rng=np.random.default_rng(0))
    save_checkpoint(tmp_path / "c.npz", model)
    other = Transformer(small_config(d_model=32, d_ff=48), rng=np.random.default_rng(0))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "c.npz", model=other)
    message = str(err.value)
    assert "d_model 16 in the checkpoint, 32 in the model" in message
    assert "d_ff 24 in the checkpoint, 48 in the model" in message
    assert "n_heads" not in message

    lm = DecoderOnlyTransformer(small_config(), rng=np.random.default_rng(0))
    with pytest.raises(CheckpointError, match="holds a Transformer, cannot load it into a "
                                              "DecoderOnlyTransformer"):
        load_checkpoint(tmp_path / "c.npz", model=lm)


def test_loading_into_a_model_copies_in_place(tmp_path):
    source = Transformer(small_config(), rng=np.random.default_rng(1))
    save_checkpoint(tmp_path / "c.npz", source)
    target = Transformer(small_config(), rng=np.random.default_rng(2))
    weight = target.encoder.layers[0].ff.linear1.params["weight"]
    returned, _ = load_checkpoint(tmp_path / "c.npz", model=target)
    assert returned is target and target.encoder.layers[0].ff.linear1.params["weight"] is weight
    for (_, a, _), (_, b, _) in zip(source.named_parameters(), target.named_parameters()):
        np.testing.assert_array_equal(a, b)


def frozen_names(model):
    return [name for name, _, _ in model.named_parameters()
            if name not in {n for n, _, _ in model.trainable_parameters()}]


def test_adapters_on_part_of_a_model_come_back_in_the_same_places(tmp_path, rng):
    model = Transformer(small_config(), rng=np.random.default_rng(3))
    add_lora(model.decoder, 2, alpha=3.0, rng=np.random.default_rng(4))     # the decoder's only
    trained_a_little(model, rng)
    save_checkpoint(tmp_path / "m.npz", model)
    loaded, _ = load_checkpoint(tmp_path / "m.npz")
    assert [name for name, *_ in lora_layers(loaded)] == [name for name, *_ in lora_layers(model)] == \
        [f"decoder.layers.{i}.{attn}.{w}" for i in (0, 1) for attn in ("self_attn", "cross_attn")
         for w in ("w_q", "w_v")]
    assert all(layer.alpha == 3.0 for *_, layer in lora_layers(loaded))
    assert frozen_names(loaded) == frozen_names(model)        # the encoder trains, as it did
    src, tgt = ids(rng, (2, 5)), ids(rng, (2, 4))
    np.testing.assert_array_equal(loaded(src, tgt), model(src, tgt))


@pytest.mark.parametrize("cls,tie", [(Transformer, False), (Transformer, True),
                                     (DecoderOnlyTransformer, True)])
def test_frozen_parameters_stay_frozen_after_a_round_trip(tmp_path, cls, tie):
    model = cls(small_config(tie_embeddings=tie), rng=np.random.default_rng(3))
    freeze(model, ["decoder", "embeddings"])
    frozen = frozen_names(model)
    assert frozen and len(frozen) < len(list(model.named_parameters()))
    save_checkpoint(tmp_path / "m.npz", model)
    loaded, _ = load_checkpoint(tmp_path / "m.npz")
    assert frozen_names(loaded) == frozen
    assert checkpoint.frozen_parameters(loaded) == checkpoint.frozen_parameters(model)  # tied copies too


def test_a_checkpoint_from_before_adapter_places_and_freezing_were_recorded_loads_as_then(tmp_path):
    """A file without "frozen" and the adapters' "layers": adapters on every target, the rest frozen."""
    model = add_lora(Transformer(small_config(), rng=np.random.default_rng(3)), 2)
    path = save_checkpoint(tmp_path / "m.npz", model)
    meta, arrays, _ = checkpoint.read_checkpoint(path)
    del meta["frozen"], meta["lora"]["layers"]
    arrays[checkpoint.META_KEY] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    np.savez(path, **arrays)
    loaded, _ = load_checkpoint(path)
    assert [name for name, *_ in lora_layers(loaded)] == [name for name, *_ in lora_layers(model)]
    assert frozen_names(loaded) == frozen_names(model)


@pytest.mark.parametrize("key,value,message", [
    ("frozen", ["encoder.nowhere.weight"], r"lists frozen parameter\(s\) \['encoder.nowhere.weight'\] "
                                            r"the model does not have"),
    ("frozen", "encoder", r"metadata 'frozen' should list dotted names, got 'encoder'"),
    ("layers", ["decoder.nowhere.w_q"], r"holds LoRA adapters under \['decoder.nowhere'\], which the "
                                        r"model does not have"),
    ("layers", [3], r"metadata 'lora layers' should list dotted names, got \[3\]")])
def test_a_bad_record_of_adapters_or_frozen_parameters_is_a_clear_error(tmp_path, key, value, message):
    path = save_checkpoint(tmp_path / "m.npz", add_lora(Transformer(small_config(),
                                                                    rng=np.random.default_rng(3)), 2))
    meta, arrays, _ = checkpoint.read_checkpoint(path)
    (meta["lora"] if key == "layers" else meta)[key] = value
    arrays[checkpoint.META_KEY] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    np.savez(path, **arrays)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)
