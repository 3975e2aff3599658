"""scripts/realworld.py: extraction of models from example files, classification, the summary.

Synthetic examples written here stand in for keras-io scripts and notebooks: what downloads, trains
or loops over data must be skipped (each would leave a trace in ``calls`` if it ran), every model
the example builds must be found (also one a later statement replaced, one only a ``build_*``
function makes, a subclassed one built from the ``input_shape`` the example names) and checked.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import pytest

import kerastorch_magic as k2t

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "realworld.py"


@pytest.fixture(scope="module")
def realworld():
    spec = importlib.util.spec_from_file_location("realworld", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["realworld"] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    return module


EXAMPLE = '''"""Title: a synthetic keras-io example"""
import numpy as np
import keras
from keras import layers

calls = []
path = keras.utils.get_file("data.zip", "https://example.com/data.zip")
(x_train, y_train), _ = keras.datasets.mnist.load_data()
num_classes = len(np.unique(y_train))  # data-dependent: fails, gets a generic 10
characters = set()  # filled by a loop over the data, skipped
num_chars = len(characters)  # 0: gets a generic 1000
input_shape = (8, 8, 1)

conv = layers.Conv2D(4, 3, activation="relu")
model = keras.Sequential([keras.Input(input_shape), conv, layers.Flatten(), layers.Dense(num_classes)])
model.compile(loss="mse")
calls.append("fit") or model.fit(x_train, y_train, epochs=1)
for batch in train_ds.take(1):
    calls.append("data loop")
for units in [8, 4]:
    calls.append(units)
model = keras.Sequential([keras.Input((5,)), layers.Dense(3), layers.ReLU()])


def build_model():
    calls.append("build_model")
    inputs = keras.Input((6,))
    return keras.Model(inputs, layers.Dense(2)(layers.BatchNormalization()(inputs)))


def get_model(units):  # a required argument: never called by the script
    calls.append("get_model")


def train_model(model):
    calls.append("train_model")


train_model(model)


class Classifier(keras.Model):
    def __init__(self):
        super().__init__()
        self.flatten = layers.Flatten()
        self.dense = layers.Dense(3, activation="softmax")

    def call(self, x):
        return self.dense(self.flatten(x))


classifier = Classifier()
'''


def _args(tmp_path: Path, **overrides) -> argparse.Namespace:
    values = dict(
        timeout=120.0, model_timeout=60.0, tolerance=1e-5, no_randomise=False, no_fork=False,
        result=str(tmp_path / "records.jsonl"), out=str(tmp_path / "out"), nice=0, max_rss_gb=6.0,
    )  # fmt: skip
    return argparse.Namespace(**(values | overrides))


def test_extraction_skips_downloads_training_and_data_loops(realworld, tmp_path):
    path = tmp_path / "example.py"
    path.write_text(EXAMPLE)
    extraction = realworld.Extraction(path)
    extraction.run()
    extraction.call_builders()
    extraction.build_unbuilt()

    assert extraction.namespace["calls"] == [8, 4, "build_model"]
    assert extraction.substituted == {"num_classes": 10, "num_chars": 1000}
    skipped = " ".join(extraction.skipped)
    for why in ("get_file()", "load_data()", "fit()", "a loop over data", "the example's train_model()"):
        assert why in skipped
    found = {f.variable: f.model for f in extraction.found}
    # both models once bound to `model` (the first was replaced), in the order the example made them
    assert [f.variable for f in extraction.found] == ["model", "model", "classifier", "build_model()"]
    assert [f.model.output_shape for f in extraction.found if f.variable == "model"] == [
        (None, 10),
        (None, 3),
    ]
    assert found["classifier"].built  # called on zeros of input_shape (8, 8, 1)


def test_run_example_classifies_every_model(realworld, tmp_path):
    path = tmp_path / "example.py"
    path.write_text(EXAMPLE)
    records = realworld.run_example(path, _args(tmp_path))

    models = [r for r in records if r["type"] == "model"]
    assert {r["variable"]: r["result"] for r in models} == {
        "model": "exact",
        "build_model()": "exact",
        "classifier": "exact",
    }
    assert len(models) == 4 and all(r["max_rel_diff"] <= 1e-5 for r in models)
    example = records[-1]
    assert example["type"] == "example" and example["status"] == "ok" and example["models"] == 4
    # Every record was also appended to the result file as it was made (a stalled example keeps them).
    written = (tmp_path / "records.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in written] == records


def test_notebook_magics_and_unbuilt_models(realworld, tmp_path):
    cells = [
        "%pip install -q nothing\n!wget https://example.com/x\nimport keras",
        "%%bash\necho not python",
        "%%time\nclass Net(keras.Model):\n    def call(self, x):\n        return x\n\nnet = Net()",
        "files = !ls\nbroken(",  # a cell that does not parse is left out, the others still run
        "seq = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])",
    ]
    notebook = {
        "cells": [{"cell_type": "code", "source": cell} for cell in cells] + [{"cell_type": "markdown"}]
    }
    path = tmp_path / "10_chapter.ipynb"
    path.write_text(json.dumps(notebook))
    records = realworld.run_example(path, _args(tmp_path))

    assert {r["variable"]: r["result"] for r in records if r["type"] == "model"} == {
        "net": "not built",
        "seq": "exact",
    }
    example = records[-1]
    assert example["statements"] == {"ran": 7} and len(example["errors"]) == 1
    assert "cell 2: SyntaxError" in example["errors"][0]["error"]


def test_refusal_reasons_name_the_layer_class_and_group(realworld):
    missing = k2t.ConversionError(
        "cannot convert Keras model 'functional_3': "
        "no converter for 'text_vectorization_2' (TextVectorization):\n"
        "  - 'text_vectorization_2' (TextVectorization): a built-in Keras layer with no converter yet "
        "(kerastorch_magic.converter can add one)",
        [("text_vectorization_2", "TextVectorization")],
    )
    assert (
        realworld.refusal_reason(missing) == "TextVectorization: a built-in Keras layer with no converter yet"
    )
    try:
        try:
            raise TypeError("unhashable type: 'list' at 3")
        except TypeError as cause:
            raise k2t.ConversionError(f"cannot convert Keras model 'm': TypeError: {cause}") from cause
    except k2t.ConversionError as wrapped:
        assert realworld.refusal_reason(wrapped) == "internal TypeError (wrapped): unhashable type: '…' at N"


def test_discover_and_summary(realworld, tmp_path):
    (tmp_path / "keras-io" / "examples" / "vision").mkdir(parents=True)
    (tmp_path / "keras-io" / "examples" / "vision" / "a.py").write_text("")
    (tmp_path / "handson").mkdir()
    for name in ("09_x.ipynb", "10_y.ipynb", "19_z.ipynb", "20_w.ipynb"):
        (tmp_path / "handson" / name).write_text("{}")
    found = [name for name, _ in realworld.discover([str(tmp_path / "keras-io"), str(tmp_path / "handson")])]
    assert found == ["keras-io/examples/vision/a.py", "handson/10_y.ipynb", "handson/19_z.ipynb"]

    records = [
        {"type": "example", "example": "keras-io/a.py", "status": "ok"},
        {"type": "model", "example": "keras-io/a.py", "result": "exact"},
        {"type": "model", "example": "keras-io/a.py", "result": "refused", "reason": "LSTM: no converter",
         "layers": [["lstm", "LSTM"]]},
        {"type": "model", "example": "keras-io/a.py", "result": "crashed", "stage": "convert",
         "reason": "KeyError: 3", "traceback": ["conversion.py:10 f: x[3]", "KeyError: 3"], "model": "m"},
        {"type": "model", "example": "keras-io/a.py", "result": "keras failed", "stage": "compare",
         "reason": "running Keras layer 'conv' failed: NHWC", "model": "cf"},
        {"type": "example", "example": "keras-io/b.py", "status": "not extractable",
         "reason": "line 3: ModuleNotFoundError: No module named 'tensorflow_io'"},
    ]  # fmt: skip
    summary = realworld.summarise(records)
    assert summary["results"] == {
        "exact": 1, "mismatch": 0, "refused": 1, "crashed": 1, "keras failed": 1, "not built": 0,
        "timeout": 0,
    }  # fmt: skip
    assert summary["refusal_reasons"] == [("LSTM: no converter", 1)]
    assert summary["not_extractable"] == [("missing module tensorflow_io", 1)]
    text = realworld.render(summary)
    assert "| 1 | LSTM: no converter |" in text and "KeyError: 3" in text and "conversion.py:10" in text
    assert "## Keras failed (1)" in text and "model 'cf': running Keras layer 'conv' failed" in text


def test_a_model_keras_cannot_run_is_not_our_crash(realworld, monkeypatch):
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="dense")], name="m")

    def keras_fails(model, conversion, **options):  # as compare() does when Keras raises
        raise k2t.KerasRunError("running Keras layer 'dense' failed: no kernel here", "dense")

    monkeypatch.setattr(k2t, "compare", keras_fails)
    record = realworld.check_model(realworld.Found(model, "model", 3), 1e-5, 60.0, randomise=False)
    assert record["result"] == "keras failed" and record["stage"] == "compare"
    assert record["reason"] == "running Keras layer 'dense' failed: no kernel here"


def test_a_stalled_example_is_killed_and_recorded(realworld, tmp_path):
    path = tmp_path / "stall.py"
    path.write_text("import time\ntime.sleep(60)\n")
    records = realworld.run_all([("stall.py", path)], _args(tmp_path, timeout=3.0))

    assert records[-1]["status"] == "timeout"
    assert records[-1]["reason"] == "the subprocess ended: timeout, at line 2: time.sleep(60)"
    results = (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    assert json.loads(results[-1])["status"] == "timeout"


def test_changes_between_two_runs(realworld):
    def model(variable, result, line=1):
        return {"type": "model", "example": "e.py", "variable": variable, "model": variable, "line": line,
                "result": result, "reason": "why"}  # fmt: skip

    before = [model("a", "refused"), model("b", "exact"), model("c", "exact"), model("m", "exact", line=2)]
    after = [model("a", "exact"), model("b", "crashed"), model("c", "exact"), model("m", "refused", line=9)]
    text = realworld.changes(before, after)
    assert (
        "| refused | exact | 1 |" in text and "| exact | crashed | 1 |" in text and "| (same) | | 1 |" in text
    )
    assert "Models only before: 1; only now: 1." in text  # `m` came from another line: another model
    assert "### Regressions: exact before, not now (1)" in text and "- e.py `b` (b): crashed: why" in text
