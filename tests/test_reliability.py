"""Faults and bad state: kills at exact points, malformed and diverged
checkpoints, unusable run directories, a full disk, two trainers, Ctrl-C at awkward moments.

A kill is placed exactly, never by timing: a subprocess runs the command line with one
function wrapped so that it SIGKILLs its own process at a named point (just after a
given file is renamed into place, halfway through writing a PNG). A full disk is a
file-size limit (RLIMIT_FSIZE) in a subprocess, with SIGXFSZ ignored so that the write
fails with EFBIG instead of killing the process.
"""

import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

import tinytransformer
from tinytransformer import cli, plot
from tinytransformer.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tinytransformer.nn.transformer import Transformer, TransformerConfig

train_module = importlib.import_module("tinytransformer.train")

ROOT = Path(tinytransformer.__file__).resolve().parents[1]
TINY = ["--task", "reverse", "--d-model", "16", "--n-heads", "2", "--d-ff", "32",
        "--n-encoder-layers", "1", "--n-decoder-layers", "1", "--batch-size", "16",
        "--max-len", "8", "--eval-size", "50", "--target", "1"]


def train_argv(out, steps=40, *more):
    return ["train", *TINY, "--steps", str(steps), "--eval-every", "10", "--out", str(out), *more]


# a fresh interpreter that imports this checkout's tinytransformer
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1"}


def python(script: str, *args, timeout=300) -> subprocess.CompletedProcess:
    """Run ``script`` (argv: ``args``) in a fresh interpreter, to its end."""
    return subprocess.run([sys.executable, "-c", script, *map(str, args)], capture_output=True,
                          text=True, env=ENV, timeout=timeout)


# argv: NAME COUNT CLI-ARGS...: SIGKILL this process right after the COUNT-th rename onto NAME
KILL_AFTER_RENAME = """
import os, signal, sys
from pathlib import Path
from tinytransformer import cli
name, count = sys.argv[1], int(sys.argv[2])
replace, seen = os.replace, 0
def replace_then_die(src, dst, **kwargs):
    global seen
    replace(src, dst, **kwargs)
    if Path(dst).name == name:
        seen += 1
        if seen == count:
            os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace_then_die
sys.exit(cli.main(sys.argv[3:]))
"""


def kill_after_rename(name, count, argv):
    done = python(KILL_AFTER_RENAME, name, count, *argv)
    assert done.returncode == -signal.SIGKILL, done.stderr
    return done


def _arrays(path):
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files if not k.startswith("__meta__")}


def assert_same_run(a: Path, b: Path):
    """Two run directories ended in the same state, bit for bit, with the same history."""
    for name in ("last.npz", "best.npz"):
        x, y = _arrays(a / name), _arrays(b / name)
        assert sorted(x) == sorted(y), name
        for key in x:
            assert np.array_equal(x[key], y[key]), (name, key)
    ha, hb = (json.loads((d / "history.json").read_text()) for d in (a, b))
    for key in ("step", "loss", "lr", "grad_norm"):
        assert ha[key] == hb[key], key
    assert [e["step"] for e in ha["eval"]] == [e["step"] for e in hb["eval"]]
    assert ha["best"]["step"] == hb["best"]["step"]


def one_line_error(err: str, code: int, expected: int | None = None) -> None:
    assert code != 0 and (expected is None or code == expected), (code, err)
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith("tinytransformer: error:"), err


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """The uninterrupted run every interrupted one must end identical to."""
    out = tmp_path_factory.mktemp("whole") / "run"
    assert cli.main(train_argv(out)) == 0
    return out


# ---- 1. a run killed before its first last.npz ----------------------------------------------


def test_resume_of_a_run_killed_before_its_first_checkpoint_starts_it_from_scratch(
        tmp_path, whole, capsys):
    out = tmp_path / "run"
    kill_after_rename("config.json", 1, train_argv(out))
    assert not (out / "last.npz").exists()
    capsys.readouterr()
    assert cli.main(train_argv(out, 40, "--resume")) == 0
    assert "starts again from step 0" in capsys.readouterr().out
    assert_same_run(whole, out)


# ---- 2. history.json matches its checkpoint -------------------------------------------------


def test_a_kill_between_last_npz_and_its_copies_loses_no_history(tmp_path, whole):
    out = tmp_path / "run"
    # killed at step 20, right after last.npz is renamed into place: before history.json
    # (and, in the same instant, before best.npz) follow
    kill_after_rename("last.npz", 2, train_argv(out))
    assert load_checkpoint(out, which="last")[1]["step"] == 20
    assert cli.main(train_argv(out, 40, "--resume")) == 0
    assert_same_run(whole, out)            # steps 11..20 are in the history, best.npz matches
    history = json.loads((out / "history.json").read_text())
    assert history["step"] == list(range(1, 41))
    assert load_checkpoint(out)[1]["step"] == history["best"]["step"]


@pytest.mark.parametrize("name,count", [("last.npz", 1), ("best.npz", 1), ("history.json", 1),
                                        ("last.npz", 3), ("history.json", 3)])
def test_a_run_killed_after_any_write_resumes_to_the_same_end(tmp_path, whole, name, count):
    out = tmp_path / "run"
    kill_after_rename(name, count, train_argv(out))
    assert cli.main(train_argv(out, 40, "--resume")) == 0
    assert_same_run(whole, out)


def test_a_run_saved_before_last_npz_held_its_history_resumes_from_history_json(tmp_path, whole):
    out = tmp_path / "run"
    kill_after_rename("history.json", 2, train_argv(out))          # at step 20
    rewrite_meta(out / "last.npz", lambda meta, arrays: meta["extra"].pop("history"))
    assert cli.main(train_argv(out, 40, "--resume")) == 0
    assert_same_run(whole, out)


def test_plot_draws_the_history_of_the_checkpoint(tmp_path, monkeypatch):
    """history.json lags last.npz after that kill: plot draws the checkpoint's history."""
    out = tmp_path / "run"
    kill_after_rename("last.npz", 2, train_argv(out))
    drawn = []
    monkeypatch.setattr(plot, "plot_training_curves", lambda history, save: drawn.append(history))
    assert cli.main(["plot", str(out), "--out", str(tmp_path / "figures")]) == 0
    assert drawn[0]["step"] == list(range(1, 21)) and drawn[0]["eval"][-1]["step"] == 20


# ---- 3. malformed checkpoints ---------------------------------------------------------------


def rewrite_meta(path: Path, change) -> None:
    """Rewrite a checkpoint with ``change(meta, arrays)`` applied (no checks)."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(arrays.pop("__meta__.json").tobytes())
    change(meta, arrays)
    arrays["__meta__.json"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _set(key, value):
    return lambda meta, arrays: meta.__setitem__(key, value)


def _drop(key):
    return lambda meta, arrays: meta.pop(key)


def _poison(meta, arrays):
    name = f"params/{meta['params'][0]}"
    arrays[name] = arrays[name].copy()
    arrays[name].flat[3] = np.inf


MALFORMED = {
    "no params": (_drop("params"), "metadata has no 'params'"),
    "no config": (_drop("config"), "metadata has no 'config'"),
    "unknown dtype": (_set("dtype", "float99"), "unknown dtype 'float99'"),
    "integer dtype": (_set("dtype", "int32"), "unknown dtype 'int32'"),
    "step not a number": (_set("step", "ten"), "'step' should be an integer, got 'ten'"),
    "params not a list": (_set("params", {"a": 1}), "'params' should be a list of names"),
    "no generator states": (_drop("model_rng_states"), "no 'model_rng_states'"),
    "dangling array": (_set("task", {"__array__": "task/nowhere"}), "'task/nowhere' missing"),
    "bad config": (_set("config", {"vocab_size": 13, "d_modle": 16}), "config is invalid"),
    "non-finite parameter": (_poison, "hold inf or NaN"),
}


@pytest.mark.parametrize("damage", MALFORMED)
def test_a_malformed_checkpoint_is_a_checkpoint_error_naming_the_problem(tmp_path, damage):
    model = Transformer(TransformerConfig(vocab_size=13, d_model=16, n_heads=2, d_ff=24),
                        rng=np.random.default_rng(0))
    path = save_checkpoint(tmp_path / "c.npz", model, task={"name": "copy"})
    change, message = MALFORMED[damage]
    rewrite_meta(path, change)
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(")):
        load_checkpoint(path)


@pytest.fixture
def copy_of_whole(whole, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    for file in whole.iterdir():
        if file.is_file():
            (out / file.name).write_bytes(file.read_bytes())
    return out


@pytest.mark.parametrize("command", ["eval", "generate", "plot", "resume"])
@pytest.mark.parametrize("damage", ["no params", "unknown dtype", "non-finite parameter",
                                    "no data state"])
def test_every_command_reports_a_malformed_checkpoint_in_one_line(copy_of_whole, capsys,
                                                                  command, damage):
    out = copy_of_whole
    if damage == "no data state":      # what only resuming needs: the batches' Generator state
        change = _set("rng_states", {})
    else:
        change = MALFORMED[damage][0]
    for name in ("best.npz", "last.npz"):
        rewrite_meta(out / name, change)
    argv = {"eval": ["eval", str(out)], "generate": ["generate", str(out), "3 4 5"],
            "plot": ["plot", str(out)], "resume": train_argv(out, 50, "--resume")}[command]
    capsys.readouterr()
    code = cli.main(argv)
    if damage == "no data state" and command != "resume":
        assert code == 0                    # eval, generate and plot do not need it
        return
    err = capsys.readouterr().err
    one_line_error(err, code, 2)
    assert "last.npz" in err if command == "resume" else "best.npz" in err


def test_a_damaged_config_json_is_one_line_on_resume(copy_of_whole, capsys):
    (copy_of_whole / "config.json").write_text('{"train": ')
    capsys.readouterr()
    code = cli.main(train_argv(copy_of_whole, 50, "--resume"))
    one_line_error(capsys.readouterr().err, code, 2)


# ---- 4. an unusable --out, a full disk, stale temporary files -------------------------------


@pytest.mark.parametrize("where", ["existing file", "parent is a file", "in /proc"])
def test_an_unusable_out_is_one_line(tmp_path, capsys, where):
    (tmp_path / "file").write_text("not a directory")
    out = {"existing file": tmp_path / "file", "parent is a file": tmp_path / "file" / "run",
           "in /proc": Path("/proc/tinytransformer-no-such-dir/run")}[where]
    code = cli.main(train_argv(out, 10))
    err = capsys.readouterr().err
    one_line_error(err, code)
    assert str(out) in err or str(out.parent) in err
    assert (tmp_path / "file").read_text() == "not a directory"


def test_an_unwritable_out_is_one_line(tmp_path, capsys):
    parent = Path(tempfile.mkdtemp(prefix="tt-readonly-"))   # /tmp: reachable by any user
    try:
        parent.chmod(0o555)
        if os.geteuid() != 0:
            code = cli.main(train_argv(parent / "run", 10))
            err = capsys.readouterr().err
        else:            # root writes anywhere: drop to "nobody" once everything is imported
            done = python("import os, sys\nfrom tinytransformer import cli\nos.setuid(65534)\n"
                          "sys.exit(cli.main(sys.argv[1:]))", *train_argv(parent / "run", 10))
            code, err = done.returncode, done.stderr
        one_line_error(err, code)
        assert "Permission denied" in err and str(parent / "run") in err
    finally:
        parent.chmod(0o755)
        parent.rmdir()


FULL_DISK = """
import resource, signal, sys
from tinytransformer import cli
limit = int(sys.argv[1])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)     # a write past the limit fails with EFBIG
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.exit(cli.main(sys.argv[2:]))
"""


def test_a_full_disk_at_a_checkpoint_is_one_line_and_keeps_the_previous_checkpoint(tmp_path):
    out = tmp_path / "run"
    assert cli.main(train_argv(out, 20)) == 0
    before = {name: (out / name).read_bytes() for name in ("last.npz", "best.npz")}
    # any file larger than the last checkpoint cannot be written: its next save fails
    done = python(FULL_DISK, len(before["last.npz"]) - 1, *train_argv(out, 40, "--resume"))
    one_line_error(done.stderr, done.returncode, 1)
    assert "File too large" in done.stderr and str(out / "last.npz") in done.stderr
    for name, data in before.items():
        assert (out / name).read_bytes() == data, name
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))


def test_stale_temporary_files_of_killed_writers_are_removed(copy_of_whole):
    out = copy_of_whole
    (out / "figures").mkdir()
    stale = [out / ".last.npz.k2j4_x9a.tmp", out / ".history.json.abcdefgh.tmp",
             out / "figures" / ".attention_cross.png.0a1b2c3d.tmp"]
    kept = [out / "notes.tmp", out / ".hidden.tmp"]          # not atomic_write's names
    for path in stale + kept:
        path.write_bytes(b"half")
    assert cli.main(train_argv(out, 50, "--resume")) == 0
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept)


# ---- 5. divergence never poisons a checkpoint -----------------------------------------------


def test_an_infinite_lr_is_refused(tmp_path, capsys):
    code = cli.main(train_argv(tmp_path / "run", 10, "--lr", "inf"))
    err = capsys.readouterr().err
    one_line_error(err, code, 2)
    assert "lr: expected a finite number > 0, got inf" in err


def test_divergence_saves_no_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    with np.errstate(all="ignore"):       # the overflow itself is the point here
        code = cli.main(["train", *TINY, "--steps", "20", "--eval-every", "1", "--lr", "1e39",
                         "--schedule", "constant", "--warmup", "0", "--out", str(out)])
    err = capsys.readouterr().err
    one_line_error(err, code, 1)
    assert "diverged at step 1" in err
    assert not (out / "best.npz").exists() and not (out / "last.npz").exists()


def test_save_checkpoint_refuses_non_finite_parameters(tmp_path):
    model = Transformer(TransformerConfig(vocab_size=13, d_model=16, n_heads=2, d_ff=24),
                        rng=np.random.default_rng(0))
    model.encoder.layers[0].ff.linear1.params["bias"][2] = np.nan
    with pytest.raises(ValueError, match=r"'encoder.layers.0.ff.linear1.bias'\] hold inf or NaN"):
        save_checkpoint(tmp_path / "c.npz", model)
    assert not list(tmp_path.iterdir())


# ---- 6. one trainer per run directory -------------------------------------------------------

# argv: READY GO CLI-ARGS...: at the first batch, create READY, then wait until GO exists
PAUSE_AT_FIRST_BATCH = """
import importlib, os, sys, time
from pathlib import Path
from tinytransformer import cli
train = importlib.import_module("tinytransformer.train")   # the package's name is the function
ready, go = Path(sys.argv[1]), Path(sys.argv[2])
draw = train.draw_batch
def draw_after_go(*args):
    if not ready.exists():
        ready.touch()
        while not go.exists():
            time.sleep(0.01)
    return draw(*args)
train.draw_batch = draw_after_go
sys.exit(cli.main(sys.argv[3:]))
"""


def start_paused_trainer(tmp_path, argv):
    ready, go = tmp_path / "ready", tmp_path / "go"
    proc = subprocess.Popen([sys.executable, "-c", PAUSE_AT_FIRST_BATCH, str(ready), str(go),
                             *argv], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    for _ in range(6000):            # a safety limit on waiting, not a timing assumption
        if ready.exists() or proc.poll() is not None:
            break
        time.sleep(0.01)
    assert ready.exists(), proc.communicate()
    return proc, go


def test_a_second_trainer_on_the_same_out_refuses(tmp_path, capsys):
    out = tmp_path / "run"
    first, go = start_paused_trainer(tmp_path, train_argv(out, 20))
    try:
        code = cli.main(train_argv(out, 20))
        err = capsys.readouterr().err
        one_line_error(err, code, 2)
        assert "in use by another trainer" in err
    finally:
        go.touch()
        _, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err


def test_a_killed_trainer_leaves_no_stuck_lock(tmp_path):
    out = tmp_path / "run"
    first, _ = start_paused_trainer(tmp_path, train_argv(out, 20))
    first.kill()                                           # SIGKILL: no cleanup runs
    first.communicate(timeout=60)
    assert cli.main(train_argv(out, 20, "--resume")) == 0


# ---- 7. Ctrl-C at awkward moments, a kill while plotting ------------------------------------


def test_ctrl_c_right_after_the_start_saves_and_resumes(tmp_path, whole, monkeypatch, capsys):
    """Ctrl-C while the held-out set is being built, before the first step."""
    held_out = train_module.held_out

    def interrupted_held_out(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return held_out(*args, **kwargs)

    out = tmp_path / "run"
    monkeypatch.setattr(train_module, "held_out", interrupted_held_out)
    assert cli.main(train_argv(out)) == 130
    monkeypatch.undo()
    assert f"--out {out} --resume" in capsys.readouterr().out
    assert load_checkpoint(out, which="last")[1]["step"] == 0
    assert cli.main(train_argv(out, 40, "--resume")) == 0
    assert_same_run(whole, out)


def test_a_second_ctrl_c_aborts_without_saving(tmp_path, whole, monkeypatch, capsys):
    draw = train_module.draw_batch
    calls = []

    def draw_with_two_ctrl_c(*args):
        calls.append(1)
        if len(calls) == 15:                               # at step 15; step 10 was saved
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return draw(*args)

    out = tmp_path / "run"
    monkeypatch.setattr(train_module, "draw_batch", draw_with_two_ctrl_c)
    assert cli.main(train_argv(out)) == 130
    monkeypatch.undo()
    assert load_checkpoint(out, which="last")[1]["step"] == 10
    printed = capsys.readouterr().out
    assert "press again to abort without saving" in printed and "Aborted without saving" in printed
    assert f"--out {out} --resume" in printed
    assert cli.main(train_argv(out, 40, "--resume")) == 0
    assert_same_run(whole, out)


# argv: PNG: write half of the PNG's bytes, then SIGKILL this process
KILL_HALFWAY_THROUGH_A_PNG = """
import io, os, signal, sys
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from tinytransformer.plot import plot_positional_encoding
print_png = FigureCanvasAgg.print_png
def half_then_die(self, target, *, metadata=None, pil_kwargs=None, **ignored):
    buffer = io.BytesIO()
    print_png(self, buffer, metadata=metadata, pil_kwargs=pil_kwargs)
    if isinstance(target, io.BytesIO):            # matplotlib's dry run, to lay the figure out
        return target.write(buffer.getvalue())
    data = buffer.getvalue()[:len(buffer.getvalue()) // 2]
    if hasattr(target, "write"):
        target.write(data)
        target.flush()
    else:
        with open(target, "wb") as f:
            f.write(data)
    os.kill(os.getpid(), signal.SIGKILL)
FigureCanvasAgg.print_png = half_then_die
plot_positional_encoding(np.zeros((8, 16)), save=sys.argv[1])
"""


def test_a_kill_while_plotting_leaves_no_truncated_png(tmp_path):
    path = tmp_path / "figures" / "pe.png"
    done = python(KILL_HALFWAY_THROUGH_A_PNG, path)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert not path.exists()
    assert [p.name.startswith(".pe.png.") for p in path.parent.iterdir()] == [True]
