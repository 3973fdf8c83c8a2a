"""The command line on text: train --task text, generate, eval, plot, merge and export, on a text
run and on small Hugging Face folders written by save_pretrained (GPT-2-like and LLaMA-like)."""

import io
import json
import re

import numpy as np
import pytest

from tinytransformer import cli, load_checkpoint
from tinytransformer.open import open_model

TEXT = "".join(f"the cat sat on mat {i % 7}; the dog ran to log {i % 5}.\n" for i in range(40))
TINY = ["--d-model", "16", "--n-heads", "2", "--d-ff", "24", "--n-decoder-layers", "2"]
QUICK = ["--block-size", "16", "--batch-size", "4", "--warmup", "2", "--log-every", "1000"]


def train_text(text_file, out, *options):
    return cli.main(["train", "--task", "text", "--text", str(text_file), *TINY, *QUICK,
                     "--out", str(out), *options])


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "tiny.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def text_run(text_file):
    out = text_file.parent / "run"
    assert train_text(text_file, out, "--steps", "12", "--eval-every", "5") == 0
    return out


def test_a_text_run_reports_bits_per_character_and_a_sample(text_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert train_text(text_file, out, "--steps", "10", "--eval-every", "5") == 0
    printed = capsys.readouterr().out
    history = json.loads((out / "history.json").read_text())
    first = history["eval"][0]
    assert f"eval at step 5: validation {first['bpc']:.4f} bits per character; " in printed
    assert f"-> {first['sample']!r}" in printed
    assert f"Validation {history['best']['bpc']:.4f} bits per character at step" in printed
    assert (out / "best.npz").is_file() and (out / "tokenizer").is_dir()
    for name in ("attention_layer0.png", "attention_layer1.png", "training_curves.png"):
        assert (out / "figures" / name).stat().st_size > 0
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["lr"] == 3e-3 and config["train"]["decay_steps"] == 10
    assert config["model"]["d_model"] == 16 and config["task"]["tokenizer"] == "CharTokenizer"


def test_resume_from_the_command_line_ends_where_an_uninterrupted_run_does(text_file, tmp_path):
    assert train_text(text_file, tmp_path / "whole", "--steps", "12", "--eval-every", "5") == 0
    assert train_text(text_file, tmp_path / "split", "--steps", "7", "--decay-steps", "12",
                      "--eval-every", "5") == 0
    assert cli.main(["train", "--out", str(tmp_path / "split"), "--resume", "--steps", "12"]) == 0
    a = load_checkpoint(tmp_path / "whole", which="last")[0].state_dict()
    b = load_checkpoint(tmp_path / "split", which="last")[0].state_dict()
    assert all(np.array_equal(a[name], b[name]) for name in a)


def test_minutes_end_a_run_before_its_steps(text_file, tmp_path, capsys):
    assert train_text(text_file, tmp_path / "run", "--steps", "100000", "--minutes", "0.005") == 0
    printed = capsys.readouterr().out
    assert "stopped after 0.005 minutes" in printed
    assert json.loads((tmp_path / "run" / "history.json").read_text())["stopped"] == "minutes"
    # a toy run has the same budget
    assert cli.main(["train", "--task", "copy", "--max-len", "3", "--steps", "100000", "--minutes", "0.005",
                     "--eval-size", "10", "--d-model", "16", "--n-heads", "2", "--d-ff", "24",
                     "--n-encoder-layers", "1", "--n-decoder-layers", "1", "--out", str(tmp_path / "toy")]) == 0
    assert "not solved (exact match >= 0.995 overall and >= 0.995 at every length) within 0.005 minutes" \
        in capsys.readouterr().out


@pytest.mark.parametrize("content, options, message", [
    (None, [], "no such file"),
    (b"caf\xe9", [], r"not UTF-8 text \(byte 0xe9 at offset 3"),
    (b"", [], "the file is empty"),
    (b"too short a text", [], "fewer than one window"),
    (TEXT.encode(), ["--tokenizer", "bpe", "--vocab-size", "100"], r"vocab_size: .*>= 256"),
], ids=["missing", "latin-1", "empty", "too short", "bpe below 256"])
def test_a_text_it_cannot_train_on_is_one_line_and_exit_2(tmp_path, capsys, content, options, message):
    path = tmp_path / "text.txt"
    if content is not None:
        path.write_bytes(content)
    assert train_text(path, tmp_path / "run", "--steps", "4", *options) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("tinytransformer: error: train: ")
    assert re.search(message, err), err


def test_generate_continues_a_prompt_past_the_context(text_run, capsys):
    """Greedy, 40 tokens from a 16-token context: what the CLI prints is the model's argmax on the
    last 16 tokens at every step, computed here without the cache."""
    assert cli.main(["generate", str(text_run), "the cat", "--max-new-tokens", "40",
                     "--temperature", "0"]) == 0
    out, err = capsys.readouterr()
    model, tokenizer, _ = open_model(text_run)
    ids = tokenizer.encode("the cat")
    for _ in range(40):
        ids.append(int(model.eval()(np.array([ids[-16:]]))[0, -1].argmax()))
    assert out == tokenizer.decode(ids) + "\n"
    assert "40 tokens in" in err and "tokens/s" in err


def test_generate_samples_with_a_seed(text_run, capsys):
    argv = ["generate", str(text_run), "the", "--max-new-tokens", "30", "--top-k", "5", "--top-p", "0.9"]
    outputs = []
    for seed in ("0", "0", "1"):
        assert cli.main([*argv, "--seed", seed]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1] != outputs[2]
    assert cli.main(["generate", str(text_run), "the Zebra"]) == 2
    assert "'Z'" in capsys.readouterr().err


def test_eval_scores_the_runs_validation_split_or_a_file(text_run, tmp_path, capsys):
    best = load_checkpoint(text_run)[1]["extra"]["eval"]
    assert cli.main(["eval", str(text_run)]) == 0
    assert f"{best['bpc']:.4f} bits per character on the validation split" in capsys.readouterr().out
    other = tmp_path / "other.txt"
    other.write_text("the dog sat on the cat.\n" * 3, encoding="utf-8")
    assert cli.main(["eval", str(text_run), "--text", str(other)]) == 0
    assert f"on {other} (the whole file)" in capsys.readouterr().out
    assert cli.main(["eval", str(text_run), "--per-length"]) == 2
    assert "--per-length does not apply" in capsys.readouterr().err


def test_plot_draws_one_layer_or_all(text_run, tmp_path, capsys):
    assert cli.main(["plot", str(text_run), "--example", "the dog", "--layer", "1",
                     "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["attention_layer1.png", "training_curves.png"]
    assert cli.main(["plot", str(text_run), "--layer", "2", "--out", str(tmp_path)]) == 2
    assert "--layer expected 0 to 1" in capsys.readouterr().err


def test_the_options_of_the_other_kind_of_model_are_refused(tmp_path, capsys):
    toy = tmp_path / "toy"
    assert cli.main(["train", "--task", "copy", "--max-len", "3", "--steps", "2", "--eval-every", "2",
                     "--eval-size", "10", "--d-model", "16", "--n-heads", "2", "--d-ff", "24",
                     "--n-encoder-layers", "1", "--n-decoder-layers", "1", "--out", str(toy)]) == 0
    capsys.readouterr()
    assert cli.main(["generate", str(toy), "1 2", "--top-p", "0.5"]) == 2
    assert "--top-p does not apply" in capsys.readouterr().err
    assert cli.main(["export", str(toy), "--out", str(tmp_path / "hf")]) == 2
    assert "toy task" in capsys.readouterr().err


# ---- Hugging Face folders: GPT-2-like and LLaMA-like, written here by save_pretrained ------


HF_LIKE = {
    "gpt2": dict(positional="learned", activation="gelu_tanh", tie_embeddings=True),
    "llama": dict(positional="rope", norm="rmsnorm", activation="swiglu", bias=False, n_kv_heads=1),
}


def tiny_pretrained(family):
    """A tiny model of the family, and a BPE tokenizer with an end of text (its bos and eos)."""
    from tinytransformer import BPETokenizer, DecoderOnlyTransformer, TransformerConfig
    learned = BPETokenizer.train(TEXT, 300)
    tokenizer = BPETokenizer(learned.vocab, learned.merges, {"<|endoftext|>": learned.vocab_size})
    config = TransformerConfig(vocab_size=tokenizer.vocab_size, d_model=16, n_heads=2, d_ff=32,
                               n_encoder_layers=0, n_decoder_layers=2, max_len=32, embed_scale=False,
                               head_bias=False, pad_id=None, bos_id=tokenizer.eot_id,
                               eos_id=tokenizer.eot_id, **HF_LIKE[family])
    return DecoderOnlyTransformer(config, np.random.default_rng(3)), tokenizer


@pytest.fixture(scope="module", params=sorted(HF_LIKE))
def hf_folder(request, tmp_path_factory):
    from tinytransformer.pretrained import save_pretrained
    folder = tmp_path_factory.mktemp(request.param) / "model"
    model, tokenizer = tiny_pretrained(request.param)
    save_pretrained(model, folder, tokenizer=tokenizer)
    return folder


def test_generate_eval_and_plot_open_a_hugging_face_folder(hf_folder, text_file, tmp_path, capsys):
    assert cli.main(["generate", str(hf_folder), "the cat", "--max-new-tokens", "50",
                     "--temperature", "1", "--seed", "1"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("the cat") and "tokens/s" in err
    assert cli.main(["eval", str(hf_folder)]) == 2
    assert "give the text to score with --text FILE" in capsys.readouterr().err
    assert cli.main(["eval", str(hf_folder), "--text", str(text_file)]) == 0
    model, tokenizer, _ = open_model(hf_folder)
    from tinytransformer import bits_per_char
    assert f"{bits_per_char(model, tokenizer, TEXT):.4f} bits per character on {text_file}" in \
        capsys.readouterr().out
    assert cli.main(["plot", str(hf_folder), "--example", "the dog ran", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["attention_layer0.png", "attention_layer1.png"]


def test_generate_stops_at_the_end_of_text(tmp_path, capsys):
    """A GPT-2-like model that always predicts the end of text (its final norm gives one constant
    vector, which the head reads as eos): generation stops at once, printing the prompt."""
    from tinytransformer.pretrained import save_pretrained
    model, tokenizer = tiny_pretrained("gpt2")
    model.norm.params["weight"][...] = 0.0
    model.norm.params["bias"][...] = np.eye(16)[0]                       # h = e_0 at every position
    model.embed.params["weight"][:, 0] = 0.0                             # the tied head: e_0 . row
    model.embed.params["weight"][model.config.eos_id, 0] = 5.0           # is 5 for eos, 0 for the rest
    save_pretrained(model, tmp_path / "eos", tokenizer=tokenizer)
    assert cli.main(["generate", str(tmp_path / "eos"), "the cat", "--max-new-tokens", "50",
                     "--temperature", "0"]) == 0
    out, err = capsys.readouterr()
    assert out == "the cat\n" and "0 tokens in" in err and "end-of-text" in err


def test_lora_on_a_hugging_face_folder_then_merge_and_export(hf_folder, text_file, tmp_path, capsys):
    out = tmp_path / "lora"
    assert cli.main(["train", "--task", "text", "--init-from", str(hf_folder), "--text", str(text_file),
                     "--lora-rank", "2", "--steps", "4", "--eval-every", "2", "--block-size", "16",
                     "--batch-size", "4", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["lr"] == 1e-3 and config["task"]["tokenizer"] == "BPETokenizer"
    model, info = load_checkpoint(out, which="last")
    assert info["lora"]["base"]["pretrained"] and info["tokenizer"].eot_id is not None
    assert cli.main(["generate", str(out), "the cat", "--max-new-tokens", "5"]) == 0
    assert cli.main(["merge", str(out)]) == 0
    merged, merged_info = load_checkpoint(out / "merged.npz")
    ids = np.array([info["tokenizer"].encode("the cat sat")])
    assert np.allclose(merged.eval()(ids), model.eval()(ids), atol=1e-5)
    capsys.readouterr()
    assert cli.main(["export", str(out), "--out", str(tmp_path / "hf")]) == 0
    exported, tokenizer, _ = open_model(tmp_path / "hf")
    assert np.allclose(exported.eval()(ids), model(ids), atol=1e-5)
    assert tokenizer.encode("the cat sat") == ids[0].tolist()
    transformers = pytest.importorskip("transformers", reason="transformers is an optional reference")
    torch = pytest.importorskip("torch", reason="torch is an optional reference")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        logits = theirs(torch.tensor(ids)).logits.numpy()
    assert np.allclose(logits, model(ids), atol=1e-4)


def test_full_and_frozen_fine_tuning_of_a_hugging_face_folder(text_file, tmp_path):
    from tinytransformer.pretrained import save_pretrained
    hf_folder = tmp_path / "gpt2"
    model, tokenizer = tiny_pretrained("gpt2")
    save_pretrained(model, hf_folder, tokenizer=tokenizer)
    for name, options in (("full", []), ("frozen", ["--freeze", "embeddings"])):
        assert cli.main(["train", "--task", "text", "--init-from", str(hf_folder), "--text", str(text_file),
                         "--steps", "3", "--eval-every", "3", "--block-size", "16", "--batch-size", "4",
                         "--out", str(tmp_path / name), *options]) == 0
    base = open_model(hf_folder)[0].state_dict()
    full = load_checkpoint(tmp_path / "full", which="last")[0].state_dict()
    frozen = load_checkpoint(tmp_path / "frozen", which="last")[0].state_dict()
    assert json.loads((tmp_path / "full" / "config.json").read_text())["train"]["lr"] == 1e-4
    assert not np.array_equal(full["embed.weight"], base["embed.weight"])
    assert np.array_equal(frozen["embed.weight"], base["embed.weight"])
    assert not np.array_equal(frozen["layers.0.ff.linear1.weight"], base["layers.0.ff.linear1.weight"])


def test_eval_refuses_a_text_that_changed_since_the_run(text_file, tmp_path, capsys):
    changed = tmp_path / "text.txt"
    changed.write_text(TEXT, encoding="utf-8")
    assert train_text(changed, tmp_path / "run", "--steps", "4", "--eval-every", "4") == 0
    changed.write_text(TEXT.replace("dog", "cat"), encoding="utf-8")
    capsys.readouterr()
    assert cli.main(["eval", str(tmp_path / "run")]) == 2
    assert "has changed since the run read it" in capsys.readouterr().err


def test_an_exported_character_run_opens_again_without_an_end_of_text(text_run, text_file, tmp_path,
                                                                       capsys):
    """A character model has no eos: the folder says eos_token_id null, and opening it gives a
    model that generates to the length asked, with the same bits per character as the run.
    The text defaults keep the sqrt(D) embedding scale and the head's bias, which GPT-2 has not:
    such a run is refused with the reason; a GPT-2-shaped one is exported."""
    from tinytransformer.text_task import TextTask, text_train_config
    from tinytransformer.train import train
    assert cli.main(["export", str(text_run), "--out", str(tmp_path / "refused")]) == 2
    assert "embed_scale=True" in capsys.readouterr().err
    config = text_train_config(text=str(text_file), steps=4, eval_every=4, block_size=16, batch_size=4)
    model_config = TextTask(config).default_model_config(d_model=16, n_heads=2, d_ff=24, n_decoder_layers=2,
                                                         embed_scale=False, head_bias=False)
    train(config, model_config, out_dir=tmp_path / "run", stream=io.StringIO())
    assert cli.main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "hf")]) == 0
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["eos_token_id"] is None
    assert cli.main(["generate", str(tmp_path / "hf"), "the cat", "--max-new-tokens", "20"]) == 0
    assert "20 tokens in" in capsys.readouterr().err
    scores = []
    for model in (tmp_path / "run", tmp_path / "hf"):
        assert cli.main(["eval", str(model), "--text", str(text_file)]) == 0
        scores.append(capsys.readouterr().out.split(": ")[1])
    assert scores[0] == scores[1]
