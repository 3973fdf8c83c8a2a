"""The command line, through ``cli.main([...])``, plus one real ``python -m tinytransformer``."""

import json
import re
import subprocess
import sys

import pytest

from tinytransformer import cli
from tinytransformer.gradcheck import ArrayCheck, GradcheckResult

SMALL = ["--d-model", "32", "--n-heads", "2", "--d-ff", "64", "--n-encoder-layers", "1",
         "--n-decoder-layers", "1"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A short copy run, trained once for the module's tests."""
    out = tmp_path_factory.mktemp("cli") / "run"
    code = cli.main(["train", "--task", "copy", "--max-len", "5", *SMALL, "--steps", "300",
                     "--eval-every", "50", "--eval-size", "100", "--out", str(out)])
    assert code == 0
    return out


def test_train_writes_the_run_directory_and_reports(run_dir, capsys):
    for name in ("config.json", "history.json", "best.npz", "last.npz"):
        assert (run_dir / name).is_file(), name
    config = json.loads((run_dir / "config.json").read_text())
    assert config["train"]["task"] == "copy" and config["model"]["d_model"] == 32
    assert config["train"]["lr"] == 2e-3 and config["model"]["n_heads"] == 2   # defaults kept


def test_train_prints_the_result_and_writes_the_plots(tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(["train", "--task", "sort", "--max-len", "3", *SMALL, "--steps", "20",
                     "--eval-every", "10", "--eval-size", "20", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "Held-out exact match" in printed
    assert str(out / "best.npz") in printed and str(out / "history.json") in printed
    assert f"tinytransformer plot {out}" in printed
    for name in ("attention_encoder.png", "attention_decoder.png", "attention_cross.png",
                 "training_curves.png"):
        path = out / "figures" / name
        assert str(path) in printed and path.stat().st_size > 0, name

    # an existing run is not overwritten; --resume continues it with a bigger budget
    assert cli.main(["train", "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert cli.main(["train", "--out", str(out), "--resume", "--steps", "30"]) == 0
    history = json.loads((out / "history.json").read_text())
    assert history["step"][-1] == 30 and len(history["loss"]) == 30
    # ... but not with another model
    capsys.readouterr()
    assert cli.main(["train", "--out", str(out), "--resume", "--d-model", "64"]) == 2
    assert "d_model 64 (the run has 32)" in capsys.readouterr().err


def test_eval_prints_exact_match_also_on_longer_sequences(run_dir, capsys):
    assert cli.main(["eval", str(run_dir)]) == 0
    printed = capsys.readouterr().out
    assert "exact match" in printed and "lengths 1..5" in printed
    assert cli.main(["eval", str(run_dir), "--max-len", "8", "--n", "100", "--per-length"]) == 0
    printed = capsys.readouterr().out
    assert "length   8" in printed and "longer than training" in printed


def test_generate_prints_the_models_output(run_dir, capsys):
    assert cli.main(["generate", str(run_dir), "3 4 5 6"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == "3 4 5 6"            # a copy model that learned its task
    assert "correct" in captured.err


@pytest.mark.parametrize("argv,message", [
    (["train", "--d-model", "x"], "invalid int value: 'x'"),
    (["train", "--task", "shuffle"], "task: expected one of"),
    (["train", "--d-model", "30"], "divisible by n_heads"),
    (["train", "--resume"], "--out DIR"),
    (["eval", "no/such/run"], "no checkpoint"),
    (["generate", "RUN", "3 x 4"], "token 'x' is not a symbol"),
    (["eval", "RUN", "--max-len", "80"], "too long for this model"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_arguments_are_one_line_and_exit_code_2(run_dir, capsys, argv, message):
    argv = [str(run_dir) if a == "RUN" else a for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and err.startswith("tinytransformer: error:")
    assert "Traceback" not in err


def test_plot_writes_attention_grids_and_curves(run_dir, tmp_path, capsys):
    assert cli.main(["plot", str(run_dir), "--example", "3 4 5 6 7", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    for name in ("attention_encoder.png", "attention_decoder.png", "attention_cross.png",
                 "training_curves.png"):
        assert (tmp_path / name).stat().st_size > 0
        assert str(tmp_path / name) in printed


def test_gradcheck_prints_the_table_and_fails_on_a_failure(monkeypatch, capsys):
    gradcheck_module = sys.modules["tinytransformer.gradcheck"]   # the package's name is the function
    good = GradcheckResult("Linear", [ArrayCheck("input x", "input", 1e-10, (0,), 4, 4)])
    bad = GradcheckResult("LayerNorm", [ArrayCheck("input x", "input", 0.3, (1,), 4, 4)])
    monkeypatch.setattr(gradcheck_module, "check_all", lambda: [good])
    assert cli.main(["gradcheck"]) == 0
    assert "Linear" in capsys.readouterr().out
    monkeypatch.setattr(gradcheck_module, "check_all", lambda: [good, bad])
    assert cli.main(["gradcheck"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_python_dash_m_help():
    done = subprocess.run([sys.executable, "-m", "tinytransformer", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for command in ("train", "eval", "generate", "plot", "gradcheck", "bench"):
        assert command in done.stdout


def test_bench_passes_its_options_through_to_the_benchmark_script(monkeypatch):
    calls = []
    monkeypatch.setattr(subprocess, "call", lambda command: calls.append(command) or 0)
    assert cli.main(["bench", "--quick", "--threads", "1"]) == 0
    assert calls[0][-3:] == ["--quick", "--threads", "1"] and calls[0][-4].endswith("run.py")


def test_an_unknown_option_is_one_line_and_exit_2(capsys):
    assert cli.main(["train", "--bogus"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "tinytransformer: error: unrecognized arguments: --bogus"


@pytest.mark.parametrize("kind", ["encoder-decoder", "decoder-only", "text"])
def test_train_help_states_the_model_each_kind_of_run_builds(kind, capsys):
    """Every model option's help states the value a run of this kind gets when the option is not
    given: a decoder-only run's 4 blocks and no encoder are stated, not TransformerConfig's 2 and 2
    (those a model built from a plain config has: its blocks are its n_decoder_layers); a text
    run's own model (TEXT_DEFAULTS) where it sets one, and its context the block size."""
    from tinytransformer.cli.main import build_parser
    from tinytransformer.cli.train import TRAIN_OPTIONS, train_configs
    from tinytransformer.nn.transformer import DecoderOnlyTransformer, TransformerConfig
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    argv = ["train", "--task", "text"] if kind == "text" else ["train", "--model", kind]
    config, model_config, _ = train_configs(build_parser().parse_args(argv))
    for flag, where, name, _, _ in TRAIN_OPTIONS:
        if where == "model":
            stated = re.search(re.escape(flag) + r" [A-Z_]+ .*?\(default: (.*?)\)", help_text).group(1)
            default, *own = stated.split("; with ")
            own = dict(part.split(": ") for part in own)
            stated = (own.get("--task text", own.get("--model decoder-only", default)) if kind == "text"
                      else own.get(f"--model {kind}", default))
            value = getattr(model_config, name)
            assert stated == ("--block-size" if value == config.block_size and name == "max_len"
                              else str(value)), (flag, stated)
    if kind != "encoder-decoder":
        assert len(DecoderOnlyTransformer(model_config).layers) == model_config.n_decoder_layers == 4
    assert len(DecoderOnlyTransformer(TransformerConfig(vocab_size=13)).layers) == 2
