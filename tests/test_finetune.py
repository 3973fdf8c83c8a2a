"""Fine-tuning runs: from a tiny trained model to a new task, fully, with frozen parts or with
LoRA; adapter checkpoints and their base; the command line and its errors.

The base is a tiny copy model (d_model 32, one layer each side, lengths 1..5), trained once
for the module; the new task is reverse on the same symbols.
"""

import dataclasses
import io
import shutil

import numpy as np
import pytest

from tinytransformer import (CheckpointError, DecoderOnlyTransformer, Transformer, TransformerConfig, cli, evaluate,
                             load_checkpoint, save_checkpoint)
from tinytransformer.finetune import freeze, start_from
from tinytransformer.nn.lora import LoRALinear, lora_layers, lora_settings
from tinytransformer.train import TrainConfig, build_model, held_out, train

TINY = TransformerConfig(vocab_size=13, d_model=32, n_heads=2, d_ff=64, n_encoder_layers=1,
                         n_decoder_layers=1, max_len=12)
QUICK = dict(n_symbols=10, max_len=5, eval_size=100, log_every=1000)


def run(out, stream=None, **fields):
    config = TrainConfig(**{**QUICK, **fields})
    return train(config, None if config.init_from else TINY, out_dir=out, stream=stream or io.StringIO())


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A copy run of 200 steps: it copies most sequences, and reverses almost none."""
    out = tmp_path_factory.mktemp("finetune") / "copy"
    run(out, task="copy", steps=200, eval_every=100)
    return out


@pytest.fixture(scope="module")
def lora_run(base):
    out = base.parent / "lora"
    stream = io.StringIO()
    result = run(out, stream, task="reverse", init_from=str(base), lora_rank=4, steps=150,
                 eval_every=75)
    return out, result, stream.getvalue()


def reverse_scores(model):
    return evaluate(model, held_out(TrainConfig(task="reverse", **QUICK), n=200))


def test_a_lora_run_improves_on_the_new_task_training_only_its_adapters(base, lora_run):
    out, result, printed = lora_run
    before = reverse_scores(load_checkpoint(base)[0])
    after = reverse_scores(result.model)
    assert after["token_accuracy"] > before["token_accuracy"] + 0.15, (before, after)
    # 3 attentions x 4 projections and 2 feed-forwards x 2 Linears, x rank 4 x (in + out)
    n_adapters = 3 * 4 * 4 * (32 + 32) + 2 * 2 * 4 * (32 + 64)
    assert f"training {n_adapters:,} of {result.model.num_parameters():,} parameters" in printed
    assert f"fine-tuning {base}, LoRA rank 4 on w_q, w_k, w_v, w_o, linear1, linear2)" in printed
    trained = load_checkpoint(base)[0].state_dict()
    for name, param, _ in result.model.named_parameters():     # the base weights did not move
        if "lora" not in name:
            np.testing.assert_array_equal(param, trained[name], err_msg=name)


@pytest.mark.parametrize("rank", [1, 4])
def test_lora_rank_alone_adapts_every_projection_with_alpha_fixed_at_16(base, rank):
    """`--lora-rank R` and nothing else: adapters on every attention projection and every
    feed-forward Linear, each scaled by 16 / R (alpha fixed, so a rank adds directions, not a
    larger step)."""
    args = cli.build_parser().parse_args(["train", "--init-from", str(base), "--task", "reverse",
                                          "--max-len", "5", "--lora-rank", str(rank)])
    config = cli.train_configs(args)[0]
    model = build_model(config, None, np.random.default_rng(0))
    adapters = [(attribute, layer) for _, _, attribute, layer in lora_layers(model)]
    assert sorted({attribute for attribute, _ in adapters}) == \
        ["linear1", "linear2", "w_k", "w_o", "w_q", "w_v"]
    assert len(adapters) == 3 * 4 + 2 * 2          # 3 attentions x 4, 2 feed-forwards x 2
    assert all(layer.rank == rank and layer.alpha == 16.0 and layer.scaling == 16.0 / rank
               for _, layer in adapters)


def test_full_and_frozen_encoder_fine_tuning(base):
    for fields in ({}, {"freeze": ("encoder",)}):
        result = run(None, task="reverse", init_from=str(base), steps=60, eval_every=60, **fields)
        trained = load_checkpoint(base)[0]
        encoder_same = all(np.array_equal(p, q) for (_, p, _), (_, q, _) in
                           zip(result.model.encoder.named_parameters(), trained.encoder.named_parameters()))
        assert encoder_same == bool(fields)
        assert not np.array_equal(result.model.decoder.layers[0].ff.linear1.params["weight"],
                                  trained.decoder.layers[0].ff.linear1.params["weight"])


def test_an_adapter_checkpoint_is_small_and_rebuilds_the_model_with_adapters(base, lora_run):
    out, result, _ = lora_run
    share = result.model.num_parameters(trainable_only=True) / result.model.num_parameters()   # 0.17
    assert (out / "best.npz").stat().st_size < 2 * share * (base / "best.npz").stat().st_size
    model, info = load_checkpoint(out)
    assert info["lora"]["rank"] == 4 and info["lora"]["base"]["path"] == str((base / "best.npz").resolve())
    assert isinstance(model.encoder.layers[0].self_attn.w_q, LoRALinear)
    src, tgt = np.array([[3, 4, 5, 6]]), np.array([[1, 6, 5]])
    result.model.eval()
    np.testing.assert_array_equal(model(src, tgt), result.model(src, tgt))


def test_an_adapter_checkpoint_without_its_base_or_with_another_base_is_refused(base, lora_run, tmp_path):
    out, _, _ = lora_run
    adapters = tmp_path / "adapters.npz"
    shutil.copy(out / "best.npz", adapters)              # the absolute path to the base still holds
    assert lora_settings(load_checkpoint(adapters)[0]) is not None
    moved = tmp_path / "moved"
    shutil.copytree(base, moved / "copy")
    shutil.copytree(out, moved / "lora")
    base.rename(base.parent / "gone")
    try:
        with pytest.raises(CheckpointError, match=r"holds LoRA adapters for the base checkpoint .*"
                                                  r"copy/best.npz, which is missing"):
            load_checkpoint(adapters)
        load_checkpoint(moved / "lora")                  # found beside it, by the relative path
        changed, info = load_checkpoint(moved / "copy")
        changed.out_proj.params["bias"][0] += 1e-3
        save_checkpoint(moved / "copy" / "best.npz", changed, step=info["step"], task=info["task"])
        with pytest.raises(CheckpointError, match="holds different ones .*: the base run has changed"):
            load_checkpoint(moved / "lora")
    finally:
        (base.parent / "gone").rename(base)


def test_resuming_a_lora_run_reaches_the_same_adapters(base, tmp_path):
    fields = dict(task="reverse", init_from=str(base), lora_rank=2, eval_every=20, lr=5e-3)
    straight = run(tmp_path / "straight", steps=40, **fields).model
    run(tmp_path / "resumed", steps=20, **fields)
    resumed = train(TrainConfig(**{**QUICK, **fields, "steps": 40}), out_dir=tmp_path / "resumed",
                    resume=True, stream=io.StringIO()).model
    for (name, p, _), (_, q, _) in zip(straight.named_parameters(), resumed.named_parameters()):
        np.testing.assert_array_equal(p, q, err_msg=name)


def test_freezing_tied_embeddings_freezes_the_output_projection_too():
    model = freeze(Transformer(TransformerConfig(vocab_size=13, d_model=8, n_heads=2, d_ff=12,
                                                 tie_embeddings=True)), ["embeddings"])
    assert "weight" in model.out_proj.frozen
    names = [name for name, _, _ in model.trainable_parameters()]
    assert "tgt_embed.weight" not in names and "out_proj.bias" in names


def test_a_decoder_only_model_freezes_its_blocks_or_embeddings_and_has_no_encoder():
    config = TransformerConfig(vocab_size=13, d_model=8, n_heads=2, d_ff=12, positional="learned")
    model = freeze(DecoderOnlyTransformer(config), ["decoder"])
    assert [name for name, _, _ in model.trainable_parameters()] == \
        ["embed.weight", "pos.weight", "out_proj.weight", "out_proj.bias"]
    model = freeze(DecoderOnlyTransformer(config), ["embeddings"])
    assert not any(name.startswith(("embed.", "pos.")) for name, _, _ in model.trainable_parameters())
    with pytest.raises(ValueError, match=r"freeze: expected one of \['decoder', 'embeddings'\] for a "
                                         r"DecoderOnlyTransformer, got 'encoder'"):
        freeze(model, ["encoder"])


@pytest.mark.parametrize("positional", ["rope", "alibi", "none"])
@pytest.mark.parametrize("cls", [Transformer, DecoderOnlyTransformer])
def test_the_embeddings_of_a_model_without_a_positional_module_freeze(cls, positional, tmp_path):
    """--freeze embeddings on a run whose positions are not added to the embeddings (pos is None)."""
    save_checkpoint(tmp_path / "base.npz", cls(dataclasses.replace(TINY, positional=positional),
                                                   np.random.default_rng(0)))
    model = start_from(tmp_path / "base.npz", np.random.default_rng(1), frozen_parts=["embeddings"])
    frozen = {name for name, _, _ in model.named_parameters()} - \
        {name for name, _, _ in model.trainable_parameters()}
    assert frozen == ({"embed.weight"} if cls is DecoderOnlyTransformer else
                      {"src_embed.weight", "tgt_embed.weight"})


def test_cli_fine_tunes_evaluates_plots_and_merges(base, tmp_path, capsys):
    out = tmp_path / "lora"
    assert cli.main(["train", "--init-from", str(base), "--task", "reverse", "--max-len", "5",
                     "--lora-rank", "2", "--steps", "20", "--eval-every", "20", "--eval-size", "50",
                     "--out", str(out)]) == 0
    assert f"training {3 * 4 * 2 * (32 + 32) + 2 * 2 * 2 * (32 + 64):,} of" in capsys.readouterr().out
    for command in (["eval", str(out)], ["generate", str(out), "3 4 5"],
                    ["plot", str(out), "--out", str(tmp_path / "figures")]):
        assert cli.main(command) == 0, command
    assert cli.main(["merge", str(out)]) == 0
    merged, info = load_checkpoint(out / "merged.npz")
    assert lora_settings(merged) is None and info["task"]["name"] == "reverse"
    adapted = load_checkpoint(out)[0]
    src, tgt = np.array([[3, 4, 5]]), np.array([[1, 5, 4, 3]])
    np.testing.assert_allclose(merged(src, tgt), adapted(src, tgt), rtol=1e-4, atol=1e-5)
    assert cli.main(["eval", str(out / "merged.npz")]) == 0
    capsys.readouterr()
    assert cli.main(["merge", str(base)]) == 2
    assert "holds no LoRA adapters" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--lora-rank", "2", "--freeze", "encoder"],
     "lora_rank and freeze: LoRA already freezes every trained weight"),
    (["--lora-rank", "33"], "lora_rank: expected an integer from 1 to min(in_features, out_features) "
                            "= d_model = 32 for the attention projections of the model in"),
    (["--lora-rank", "0"], "lora_rank: expected an integer >= 1 (at most d_model), got 0"),
    (["--lora-rank", "2", "--lora-targets", "w_q", "w_x"],
     "lora_targets: expected names among ['w_q', 'w_k', 'w_v', 'w_o', 'linear1', 'linear2', 'linear3', "
     "'out_proj'], got ['w_q', 'w_x']"),
    (["--lora-targets", "w_q"], "lora_targets: sets LoRA adapters, so it needs lora_rank (--lora-rank)"),
    (["--n-symbols", "12"], "does not fit reverse with 12 symbols, lengths 1..5: vocab_size: the task "
                            "needs 15 (12 symbols + PAD/BOS/EOS), the model config has 13"),
    (["--d-model", "64"], "the model is the trained run's, its options cannot change it; drop d_model"),
    (["--model", "decoder-only"], "holds a model of kind 'encoder-decoder', the run asks for model "
                                  "'decoder-only'"),
])
def test_fine_tuning_mistakes_are_clear_one_line_errors(base, tmp_path, capsys, argv, message):
    assert cli.main(["train", "--init-from", str(base), "--task", "reverse", "--max-len", "5",
                     "--out", str(tmp_path / "run"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_lora_or_freeze_without_init_from_is_refused(capsys):
    assert cli.main(["train", "--freeze", "encoder"]) == 2
    assert "freeze: fine-tunes a trained model, so it needs init_from (--init-from RUN_DIR)" in \
        capsys.readouterr().err
