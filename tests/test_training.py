"""The training setup: a Keras model and its port trained side by side on the same batches.

Each case compiles a small Keras model, converts it, runs the generated ``configure_training`` /
``train_step`` on the port and ``train_on_batch`` on Keras, and checks that the losses (and the
metrics) agree at every step: the optimizer, schedule, clipping, weight decay and loss are the
translated ones, so a wrong hyper-parameter mapping shows up after a few steps.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import torch
from exactness import check_source

import kerastorch_magic as k2t
from kerastorch_magic import training

STEPS = 6
LOSS_TOLERANCE = 1e-4


def _model(activation: str | None, units: int = 3, conv: bool = False):
    if conv:  # a channels-first port: gradients flow through the re-laid kernels too
        layers = [
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(3, 3, activation="tanh"),
            keras.layers.Flatten(),
        ]
    else:
        layers = [keras.Input((5,)), keras.layers.Dense(8, activation="tanh")]
    return keras.Sequential([*layers, keras.layers.Dense(units, activation=activation)])


def _batches(model, kind: str, units: int, seed: int = 3):
    rng = np.random.default_rng(seed)
    shape = (4, *model.inputs[0].shape[1:])
    for _ in range(STEPS):
        x = rng.normal(size=shape).astype("float32")
        if kind == "onehot":
            y = np.eye(units, dtype="float32")[rng.integers(0, units, 4)]
        elif kind == "sparse":
            y = rng.integers(0, units, 4).astype("int64")
        elif kind == "binary":
            y = rng.integers(0, 2, (4, units)).astype("float32")
        else:
            y = rng.normal(size=(4, units)).astype("float32")
        yield x, y


CASES = {
    "sgd-momentum-cce": (
        lambda: keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True),
        "categorical_crossentropy",
        "softmax",
        "onehot",
    ),
    "adam-cce": (lambda: keras.optimizers.Adam(0.01), "categorical_crossentropy", "softmax", "onehot"),
    "rmsprop-cce": (lambda: keras.optimizers.RMSprop(0.01), "categorical_crossentropy", "softmax", "onehot"),
    "rmsprop-momentum-centered-mse": (
        lambda: keras.optimizers.RMSprop(0.005, rho=0.8, momentum=0.5, centered=True),
        "mse",
        None,
        "regression",
    ),
    "adamw-sparse-logits-schedule-clipnorm": (
        lambda: keras.optimizers.AdamW(
            keras.optimizers.schedules.ExponentialDecay(0.02, decay_steps=2, decay_rate=0.5),
            weight_decay=0.05,
            clipnorm=0.5,
        ),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        None,
        "sparse",
    ),
    "sgd-weight-decay-smoothing-global-clip-cosine": (
        lambda: keras.optimizers.SGD(
            keras.optimizers.schedules.CosineDecay(0.2, decay_steps=4, alpha=0.1),
            weight_decay=0.1,
            global_clipnorm=0.3,
        ),
        keras.losses.CategoricalCrossentropy(label_smoothing=0.2),
        "softmax",
        "onehot",
    ),
    "adagrad-bce-piecewise-clipvalue": (
        lambda: keras.optimizers.Adagrad(
            keras.optimizers.schedules.PiecewiseConstantDecay([2, 4], [0.1, 0.05, 0.02]), clipvalue=0.05
        ),
        "binary_crossentropy",
        "sigmoid",
        "binary",
    ),
    "adam-amsgrad-huber-sum-conv": (
        lambda: keras.optimizers.Adam(0.01, amsgrad=True),
        keras.losses.Huber(delta=0.5, reduction="sum"),
        None,
        "regression",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_side_by_side(case):
    make_optimizer, loss, activation, targets = CASES[case]
    units = 1 if targets == "binary" else 3
    model = _model(activation, units, conv=case.endswith("conv"))
    metrics = ["accuracy"] if targets in ("onehot", "sparse", "binary") else ["mae"]
    model.compile(optimizer=make_optimizer(), loss=loss, metrics=metrics, jit_compile=False)
    conversion = k2t.convert(model)
    snippet = training.training_snippet(model, conversion)
    check_source(snippet)
    namespace: dict = {}
    exec(compile(snippet, "<training snippet>", "exec"), namespace)
    net = conversion.build()
    setup = namespace["configure_training"](net)
    spec = conversion.inputs[0]
    for step, (x, y) in enumerate(_batches(model, targets, units)):
        keras_logs = model.train_on_batch(x, y, return_dict=True)
        x_torch = torch.from_numpy(np.ascontiguousarray(spec.to_torch_layout(x)))
        torch_loss, torch_metrics = namespace["train_step"](net, *setup, x_torch, torch.from_numpy(y))
        scale = max(1.0, abs(keras_logs["loss"]))
        assert abs(torch_loss - keras_logs["loss"]) <= LOSS_TOLERANCE * scale, (
            f"step {step}: Keras loss {keras_logs['loss']:.7g}, torch {torch_loss:.7g}\n{snippet}"
        )
        for name, value in torch_metrics.items():
            assert abs(value - keras_logs[name]) <= 1e-5, f"step {step}: metric {name}"


def test_snippet_text_explains_the_traps():
    model = _model("softmax")
    model.compile(optimizer=keras.optimizers.Adam(epsilon=1e-6), loss="categorical_crossentropy")
    snippet = training.training_snippet(model, k2t.convert(model))
    text = " ".join(line.strip(" #") for line in snippet.splitlines())
    assert "eps=1e-06" in text and "epsilon hat" in text
    assert "nn.CrossEntropyLoss()" in text and "return the logits from forward" in text
    assert "class_weight" in text and "Keras by the batch size" in text
    rms = _model(None)
    rms.compile(optimizer="rmsprop", loss="mse")
    text = training.training_snippet(rms, k2t.convert(rms))
    assert "KerasRMSprop(model.parameters(), lr=0.001, rho=0.9, epsilon=1e-07)" in text
    assert "torch's default is 0.99" in " ".join(text.split())


def test_untranslated_settings_refuse_by_name():
    model = _model(None)
    model.compile(optimizer=keras.optimizers.Lion(), loss="kl_divergence")
    snippet = training.training_snippet(model, k2t.convert(model))
    check_source(snippet)
    namespace: dict = {}
    exec(compile(snippet, "<training snippet>", "exec"), namespace)
    with pytest.raises(NotImplementedError, match=r"Lion has no torch.optim counterpart.*'kl_divergence'"):
        namespace["configure_training"](torch.nn.Linear(1, 1))
    assert "def train_step" not in snippet


def test_uncompiled_model_has_no_snippet():
    model = _model("softmax")
    conversion = k2t.convert(model)
    assert training.training_snippet(model, conversion) is None
    assert training.add_to(conversion.code, model, conversion) == conversion.code


def test_added_to_generated_code_keeps_it_clean():
    """Appended to the generated class, imports merged (math, bisect with the standard library)."""
    model = _model("softmax")
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([1], [0.1, 0.01])
    model.compile(optimizer=keras.optimizers.SGD(schedule), loss="categorical_crossentropy", metrics=["acc"])
    conversion = k2t.convert(model)
    code = training.add_to(conversion.code, model, conversion)
    check_source(code)
    assert code.index("import bisect") < code.index("import torch") < code.index("class Net")


def test_magic_cell_carries_the_training_setup(monkeypatch):
    """%%keras2torch on a cell that compiles its model: the generated cell ends with the setup,
    inside the marker's body hash (the extension tells user edits from regenerated code by it)."""
    import hashlib

    from IPython.core.interactiveshell import InteractiveShell

    from kerastorch_magic import frontend

    shown: list[str] = []
    monkeypatch.setattr(frontend, "display_code", lambda code, summary: shown.append(code))
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "kerastorch_magic")
    result = shell.run_cell(
        "%%keras2torch --no-compare --insert none --name TrainNet\n"
        "import keras\n"
        "trained = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation='softmax')])\n"
        "trained.compile(optimizer=keras.optimizers.RMSprop(0.01), loss='categorical_crossentropy')\n"
    )
    assert result.success
    marker, body = shown[0].split("\n", 1)
    assert hashlib.sha256(body.encode()).hexdigest()[:16] in marker
    assert body.index("train_net.eval()") < body.index("def configure_training(model):")
    assert "class KerasRMSprop(torch.optim.Optimizer):" in body
    check_source(body.replace('globals()["_keras2torch_weights"]["TrainNet"]', "TrainNet().state_dict()"))
