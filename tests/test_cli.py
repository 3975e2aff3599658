"""The keras2torch command line: files written, --check exit codes, one-line errors, nothing half-written."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import keras
import pytest
import torch
from exactness import ruff_binary
from saved_models import assert_same_outputs, build_cnn, save_all

import kerastorch_magic as k2t
from kerastorch_magic import cli


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cli")
    model, script = build_cnn(directory)
    return model, script, save_all(model, directory)


def _import(path):
    spec = importlib.util.spec_from_file_location(f"generated_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ruff_clean(path) -> None:
    ruff = ruff_binary()
    result = subprocess.run(
        [ruff, "check", "--isolated", "--no-cache", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout
    formatted = subprocess.run(
        [ruff, "format", "--isolated", "--diff", str(path)], capture_output=True, text=True
    )
    assert formatted.returncode == 0, formatted.stdout


def test_help():
    result = subprocess.run(
        [sys.executable, "-m", "kerastorch_magic", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0
    assert result.stdout.startswith("usage: keras2torch")
    for option in ("--weights", "--check", "--unsafe", "--custom-objects", "--build", "--input-format"):
        assert option in result.stdout


@pytest.mark.parametrize("kind", ["keras", "h5", "weights"])
def test_round_trip_and_check(saved, kind, tmp_path, capsys, monkeypatch):
    """The written module, imported from elsewhere, loads its weights and matches Keras."""
    model, script, paths = saved
    out = tmp_path / "out"
    out.mkdir()
    args = [
        str(paths[kind]),
        "-o",
        str(out / "net.py"),
        "--weights",
        str(out / "weights" / "net.safetensors"),
    ]
    (out / "weights").mkdir()
    if kind == "weights":
        args += ["--build", f"{script}:build"]
    assert cli.main([*args, "--check"]) == 0
    printed = capsys.readouterr()
    assert "keras2torch --check: OK" in printed.out and "dense" in printed.out  # the verdict and the table
    assert "loading" in printed.err and "comparing" in printed.err  # progress
    monkeypatch.chdir(tmp_path)  # the module finds its weights relative to itself
    module = _import(out / "net.py")
    net = module.load_net()
    assert not net.training
    conversion = k2t.convert(model)
    assert_same_outputs(model, net, conversion)
    _ruff_clean(out / "net.py")
    text = (out / "net.py").read_text()
    assert 'WEIGHTS = Path(__file__).parent / "weights/net.safetensors"' in text
    if kind != "weights":  # saved compiled: the training setup comes along, and trains
        assert "torch.optim.Adam(" in text
        optimizer, loss_fn = module.configure_training(net)
        x = torch.randn(4, 3, 8, 8)
        y = torch.nn.functional.one_hot(torch.arange(4) % 5, 5).float()
        loss, metrics = module.train_step(net, optimizer, loss_fn, x, y)
        assert loss > 0 and set(metrics) == {"accuracy"}


def test_defaults_quiet_and_torch_weights(saved, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main([str(saved[2]["keras"]), "--name", "SmallCNN", "-q", "--no-training"]) == 0
    assert capsys.readouterr() == ("", "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["small_cnn.py", "small_cnn.safetensors"]
    text = (tmp_path / "small_cnn.py").read_text()
    assert "def load_small_cnn(weights=WEIGHTS) -> SmallCNN:" in text and "configure_training" not in text
    assert cli.main([str(saved[2]["keras"]), "-o", "pt.py", "--weights", "pt.pt", "-q"]) == 0
    net = _import(tmp_path / "pt.py").load_net()
    assert_same_outputs(saved[0], net, k2t.convert(saved[0]))


def test_check_mismatch_exits_1(saved, tmp_path, capsys, monkeypatch):
    """A port that disagrees with Keras (one bias shifted) fails the check: exit status 1."""
    from kerastorch_magic import conversion as conversion_module

    real = conversion_module.convert

    def off_by_one(*args, **kwargs):
        result = real(*args, **kwargs)
        result.state_dict["dense.bias"][0] += 1.0  # not all: the softmax would cancel a common shift
        return result

    monkeypatch.setattr(conversion_module, "convert", off_by_one)
    status = cli.main([str(saved[2]["keras"]), "-o", str(tmp_path / "net.py"), "--check"])
    assert status == 1
    out = capsys.readouterr().out
    assert "keras2torch --check: MISMATCH" in out and "'dense'" in out


def test_conversion_error_exits_1(tmp_path, capsys):
    """A layer that cannot be converted (raw TensorFlow inside a custom layer): exit 1, nothing written."""
    script = tmp_path / "layers.py"
    script.write_text(
        "import keras\nimport tensorflow as tf\n\n\n"
        "class TFCumsum(keras.layers.Layer):\n"
        "    def call(self, x):\n"
        "        return tf.math.cumsum(x, axis=-1)\n"
    )
    namespace = _import(script)
    path = tmp_path / "custom.keras"
    keras.Sequential([keras.Input((4,)), namespace.TFCumsum(name="cumsum"), keras.layers.Dense(2)]).save(path)
    status = cli.main([str(path), "-o", str(tmp_path / "net.py"), "--custom-objects", f"{script}:TFCumsum"])
    assert status == 1
    err = capsys.readouterr().err
    assert "keras2torch: error:" in err and "cumsum" in err
    assert not (tmp_path / "net.py").exists() and not (tmp_path / "net.safetensors").exists()


def test_refusals_name_the_option(tmp_path, capsys):
    lam = tmp_path / "lambda.keras"
    keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda x: x + 1.0), keras.layers.Dense(2)]).save(
        lam
    )
    assert cli.main([str(lam), "-o", str(tmp_path / "net.py")]) == 2
    assert "--unsafe" in capsys.readouterr().err
    custom = tmp_path / "custom.keras"

    class Shift(keras.layers.Layer):
        def call(self, x):
            return x + 1.0

    keras.Sequential([keras.Input((4,)), Shift(), keras.layers.Dense(2)]).save(custom)
    assert cli.main([str(custom), "-o", str(tmp_path / "net.py")]) == 2
    err = capsys.readouterr().err
    assert "'Shift'" in err and "--custom-objects" in err and "--import" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["custom.keras", "lambda.keras"]


@pytest.mark.parametrize(
    ("make", "extra", "message"),
    [
        (lambda d: d / "absent.keras", [], "no such file"),
        (lambda d: d, [], "is a directory"),
        (lambda d: d / "truncated.keras", [], "corrupt or truncated"),
        (lambda d: d / "model.keras", ["-o", "missing_dir/net.py"], "does not exist"),
        (lambda d: d / "model.keras", ["-o", "outdir"], "ending in .py"),
        (lambda d: d / "model.keras", ["-o", "outdir.py"], "is a directory"),
        (lambda d: d / "model.keras", ["--weights", "net.npz"], ".safetensors file"),
        (lambda d: d / "model.keras", ["--name", "not a name!"], "--name"),
    ],
    ids=[
        "missing",
        "directory",
        "truncated",
        "no-output-dir",
        "not-py",
        "output-is-dir",
        "weights-kind",
        "name",
    ],
)
def test_bad_input_one_line_exit_2(saved, tmp_path, capsys, monkeypatch, make, extra, message):
    monkeypatch.chdir(tmp_path)
    data = saved[2]["keras"].read_bytes()
    (tmp_path / "truncated.keras").write_bytes(data[: len(data) // 3])
    (tmp_path / "model.keras").write_bytes(data)
    (tmp_path / "outdir.py").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    assert cli.main([str(make(tmp_path)), *extra, "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("keras2torch: error:") and message in err
    assert err.count("\n") == 1  # one line
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, no temporary left


def test_failed_write_keeps_previous_output(saved, tmp_path, capsys, monkeypatch):
    """Outputs are replaced atomically: a failure while writing leaves the previous files whole."""
    out = tmp_path / "net.py"
    assert cli.main([str(saved[2]["keras"]), "-o", str(out), "-q"]) == 0
    previous = out.read_bytes(), (tmp_path / "net.safetensors").read_bytes()

    def broken(self, text, encoding=None):
        Path.write_bytes(self, text[:10].encode())  # a partial write, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", broken)
    assert cli.main([str(saved[2]["keras"]), "-o", str(out), "-q", "--name", "Other"]) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert out.read_bytes() == previous[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.py", "net.safetensors"]


def test_every_option_is_in_the_readme():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Files and the command line", 1)[1].split("\n## ", 1)[0]
    for action in cli.build_parser()._actions:
        for option in action.option_strings:
            if option.startswith("--") and option != "--help":
                assert f"`{option}" in section, f"{option} is not documented in README.md"
