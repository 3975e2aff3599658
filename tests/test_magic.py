"""``%%keras2torch`` in a real ipykernel, driven over jupyter_client like a frontend.

One kernel for the module (TensorFlow imports once). Client ``a`` is a frontend without the
extension (it ignores the ``hello`` comm): generated cells come back as ``set_next_input``
payloads. Client ``b`` plays the JupyterLab extension: it answers the ``hello`` with
``hello_ack``, so its runs send ``upsert`` comm messages instead. Clients have distinct session
ids, as browser tabs do.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
from kernel_helpers import KernelSession, Run

from kerastorch_magic.frontend import body_hash, marker_cell_id, with_marker
from kerastorch_magic.magic import add_import, assignment_order, defined_names, instance_name
from kerastorch_magic.startup import filter_startup_log

ROOT = Path(__file__).resolve().parents[1]
MARKER_RE = re.compile(
    r"^# keras2torch: generated from cell ([A-Za-z0-9_.:-]+), body sha256 ([0-9a-f]{16})\. "
    r"Re-run that cell to regenerate; edits here are kept\.$"
)

SETUP = """
import numpy as np
import keras
import torch

def tiny(name="tiny", units=5):
    return keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.MaxPooling2D(2, name="pool"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(units, activation="softmax", name="dense"),
        ],
        name=name,
    )

def max_diff(keras_model, torch_model):
    x = np.random.default_rng(0).standard_normal((2, 8, 8, 3)).astype("float32")
    with torch.no_grad():
        got = torch_model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    return float(np.abs(got - np.asarray(keras_model(x))).max())

existing = tiny("existing")
"""

MODEL_CELL = """%%keras2torch
model = keras.Sequential(
    [
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
        keras.layers.MaxPooling2D(2, name="pool"),
        keras.layers.Flatten(name="flat"),
        keras.layers.Dense(3, activation="softmax", name="dense"),
    ],
    name="seq",
)
extra = 41 + 1
print("cell ran")
extra
"""


@pytest.fixture(scope="module")
def kernel():
    session = KernelSession()
    a, b = session.client(), session.client()
    setup = a.execute(SETUP)
    assert setup.status == "ok", setup.text
    b.flush_iopub()
    load = a.execute("%load_ext kerastorch_magic")
    assert load.status == "ok", load.text
    # b, the extension, sees the hello on IOPub (it is broadcast) and acknowledges from its session.
    hello = [m for m in load.of_type("comm_open") if m["content"]["target_name"] == "keras2torch"]
    assert len(hello) == 1
    session.hello = hello[0]["content"]
    b.send_comm(session.hello["comm_id"], {"type": "hello_ack", "version": 1})
    session.a, session.b = a, b
    yield session
    session.shutdown()


@pytest.fixture(autouse=True)
def _seed():  # the conftest's Keras/torch seeding is for in-process tests; nothing to do here
    yield


def _code(run: Run) -> str:
    (payload,) = run.next_inputs
    assert payload["replace"] is False
    return payload["text"]


def _no_cell_written(run: Run) -> None:
    assert run.next_inputs == []
    assert run.upserts == []
    assert "generated cell" not in run.stdout


# -- pure helpers ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "class_name, expected",
    [
        ("Net", "net"),
        ("MyNet", "my_net"),
        ("CNN", "cnn"),
        ("HTTPServerNet", "http_server_net"),
        ("net", "net_model"),
    ],
)
def test_instance_name(class_name, expected):
    assert instance_name(class_name) == expected


def test_add_import_sorts_like_ruff():
    code = (
        "# header\nimport torch\nimport torch.nn.functional as F\nfrom torch import nn\n\n\nclass Net: ...\n"
    )
    added = add_import(code, "from safetensors.torch import load_file")
    assert added.split("\n")[1:5] == [
        "import torch",
        "import torch.nn.functional as F",
        "from safetensors.torch import load_file",
        "from torch import nn",
    ]
    assert add_import(added, "import torch") == added


def test_assignment_order_is_cell_order():
    order = assignment_order("a = 1\nb = make()\nfor c in x: pass\na = b\n")
    assert sorted(order, key=order.get) == ["b", "c", "a"]


def test_marker_and_hash():
    code = with_marker("import torch\n", "cell-1")
    first, body = code.split("\n", 1)
    assert MARKER_RE.match(first).groups() == ("cell-1", hashlib.sha256(body.encode()).hexdigest()[:16])
    assert body_hash(code) == hashlib.sha256(body.encode()).hexdigest()
    assert marker_cell_id(None) == "unknown"
    assert marker_cell_id("x\ny#z") == "x_y_z"  # newlines never reach the comment


def test_defined_names_are_the_cells_definitions_not_its_imports():
    source = (
        "import torch\nfrom torch import nn\n\n\ndef helper(x):\n    return x\n\n\n"
        "class Net(nn.Module):\n    def forward(self, x):\n        inner = x\n        return inner\n\n\n"
        "net = Net()\nnet.eval()\nlimit: int = 3\na, (b, net) = 1, (2, 3)\n"
    )
    assert defined_names(source) == ["helper", "Net", "net", "limit", "a", "b"]


# TensorFlow 2.21's stderr while it loads (before absl::InitializeLog), as seen in a kernel.
TF_STARTUP = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    "I0000 00:00:1796062826.899039   10528 port.cc:153] oneDNN custom operations are on. You may see "
    "slightly different numerical results due to floating-point round-off errors.\n"
    "I0000 00:00:1796062826.900149   10528 cudart_stub.cc:31] Could not find cuda drivers on your "
    "machine, GPU will not be used.\n"
    "I0000 00:00:1796062845.231915   11179 cpu_feature_guard.cc:227] This TensorFlow binary is optimized.\n"
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow.\n"
    "W0000 00:00:1796062845.300000   11179 some_op.cc:12] a warning\n"
    "E0000 00:00:1796062845.400000   11179 other.cc:34] an error\n"
)


@pytest.mark.parametrize(
    "level, kept",
    [
        (0, None),  # unset or 0: TensorFlow's default shows everything
        (1, ["W0000", "E0000"]),
        (2, ["E0000"]),
        (3, []),
    ],
)
def test_tensorflow_startup_log_follows_tf_cpp_min_log_level(level, kept):
    text = filter_startup_log(TF_STARTUP, level)
    if kept is None:
        assert text == TF_STARTUP
        return
    assert [line[:5] for line in text.splitlines()] == kept  # continuation lines go with theirs
    other = "Traceback of something else\n"
    assert filter_startup_log(other + TF_STARTUP, level).startswith(other)  # not absl's: kept


def test_importing_the_package_first_keeps_tensorflow_quiet():
    """``import kerastorch_magic`` (or ``%load_ext``) before ``import keras``: no start-up lines."""
    import os

    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    code = "import os; os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'; import kerastorch_magic, keras"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stderr == "", done.stderr


def protocol_marker_regex() -> re.Pattern:
    """``MARKER_RE`` of labextension/src/protocol.ts, the parser the extension uses, as a Python regex."""
    source = (ROOT / "labextension" / "src" / "protocol.ts").read_text()
    match = re.search(r"const MARKER_RE\s*=\s*/(.+)/([a-z]*);", source)
    assert match, "protocol.ts defines MARKER_RE as a regex literal"
    pattern, flags = match.groups()
    assert flags == "", "a flag would change how the literal translates to Python"
    # The literal uses only syntax that means the same in both languages: ^, [...], (...), {n}, \b.
    assert not re.search(r"\(\?<|\\[pPk]|\\u", pattern), pattern
    return re.compile(pattern)


@pytest.mark.parametrize(
    "cell_id",
    ["5f0c6a8e-1d2b-4c3d-9e4f-0a1b2c3d4e5f", "quickstart-05", None, "x\ny#z", "a.b:c_d-e"],
)
def test_marker_contract_with_the_extension(cell_id):
    """What ``frontend.with_marker()`` writes is what the extension's ``parseMarker`` reads."""
    body = "import torch\n\n\nnet = Net()\n"
    code = with_marker(body, cell_id)
    first, rest = code.split("\n", 1)
    match = protocol_marker_regex().match(first)
    assert match, first
    assert match.groups() == (marker_cell_id(cell_id), hashlib.sha256(rest.encode()).hexdigest()[:16])


# -- the fallback path: set_next_input --------------------------------------------------------------
def test_load_ext_says_hello(kernel):
    assert kernel.hello["data"] == {"type": "hello", "version": 1}


def test_magic_inserts_a_class_matching_keras(kernel):
    run = kernel.a.execute(MODEL_CELL, cell_id="cell-seq")
    assert run.status == "ok", run.text
    code = _code(run)
    first, body = code.split("\n", 1)
    assert MARKER_RE.match(first).groups() == ("cell-seq", hashlib.sha256(body.encode()).hexdigest()[:16])
    assert "class Net(nn.Module)" in code
    assert "import kerastorch_magic" not in code and "from kerastorch_magic" not in code
    assert 'net.load_state_dict(globals()["_keras2torch_weights"]["Net"])' in code
    # The cell ran as without the magic: its print and its last expression show.
    assert "cell ran" in run.stdout
    assert any(d.get("text/plain") == "42" for d in run.displays)
    # The code in the output: collapsed HTML (escaped) + text/plain.
    (shown,) = [d for d in run.displays if "<details" in d.get("text/html", "")]
    assert shown["text/plain"] == code
    assert "&quot;" in shown["text/html"] and 'Model "' not in shown["text/html"]
    assert "keras2torch: converted model (Keras model 'seq') to class Net" in run.stdout
    assert any("Comparison" in d.get("text/plain", "") for d in run.displays)  # the comparison
    assert run.upserts == []  # client a never acknowledged: no comm traffic

    check = kernel.a.execute(code + "\nprint('DIFF', max_diff(model, net), net.training, extra)")
    assert check.status == "ok", check.text
    diff, training, extra = check.stdout.split("DIFF ")[1].split()
    assert float(diff) < 1e-5 and training == "False" and extra == "42"


def test_class_and_instance_are_defined_without_running_the_generated_cell(kernel):
    """Run All and headless runs never run the inserted cell: the magic binds both names itself."""
    kernel.a.execute("_saved_nn = globals().get('nn'); nn = 'the user nn'")
    run = kernel.a.execute(
        "%%keras2torch --no-compare --insert none --name BoundNet\nbound = tiny('bound')", cell_id="c-bound"
    )
    assert run.status == "ok", run.text
    assert "BoundNet (class) and bound_net (instance, Keras weights loaded, eval mode) are defined" in (
        run.stdout
    )
    check = kernel.a.execute(
        "print('DIFF', max_diff(bound, bound_net), bound_net.training, isinstance(bound_net, BoundNet),"
        " BoundNet.__module__, nn == 'the user nn'); nn = _saved_nn"
    )
    assert check.status == "ok", check.text
    diff, training, is_instance, module, nn_kept = check.stdout.split("DIFF ")[1].split()
    assert float(diff) < 1e-5 and training == "False" and is_instance == "True"
    assert module == "__main__"  # as if the generated cell had run: pickling finds the class
    assert nn_kept == "True"  # only the class and the instance reach the user's namespace
    # A traceback through forward shows the generated line.
    wrong = kernel.a.execute("bound_net(torch.zeros(1, 5, 8, 8))")
    traceback = re.sub(r"\x1b\[[0-9;]*m", "", "".join(wrong.errors[0]["traceback"]))
    assert wrong.status == "error" and "x = F.relu(self.conv(x), inplace=True)" in traceback, traceback


def test_compiled_models_training_setup_is_defined_too(kernel):
    run = kernel.a.execute(
        "%%keras2torch --no-compare --insert none --name FitNet\n"
        "keras_fit = tiny('fit')\nkeras_fit.compile(optimizer='adam', loss='categorical_crossentropy')",
        cell_id="c-fit",
    )
    assert run.status == "ok", run.text
    assert "are defined, with configure_training, train_step;" in run.stdout, run.stdout
    check = kernel.a.execute(
        "optimizer, loss_fn = configure_training(fit_net); print(type(optimizer).__name__)"
    )
    assert check.status == "ok" and check.stdout.strip() == "Adam", check.text


def test_name_that_would_replace_the_keras_model_is_refused(kernel):
    run = kernel.a.execute(
        "%%keras2torch --no-compare --name Model\nmodel = tiny('replaced')", cell_id="c-rep"
    )
    assert run.status == "error"
    assert "the generated instance model would replace the Keras model held by model" in run.text
    _no_cell_written(run)
    assert "keras.src" in kernel.a.execute("print(type(model))").stdout


def test_generated_cell_is_ruff_clean(kernel, tmp_path):
    run = kernel.a.execute(
        "%%keras2torch --name Small --no-compare --insert payload --weights "
        + str(tmp_path / "s.safetensors")
        + "\nkeras_small = tiny()",
        cell_id="cell-ruff",
    )
    code = _code(run)
    lint = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "--isolated",
            "--select",
            "E,F,W,I,B,UP",
            "--ignore",
            "E501",
            "--stdin-filename",
            "cell.py",
            "-",
        ],
        input=code,
        capture_output=True,
        text=True,
    )
    assert lint.returncode == 0, lint.stdout + code


def test_rerun_with_same_code_is_not_inserted_twice(kernel):
    cell = "%%keras2torch --no-compare --name Twice\nkeras_twice = tiny('twice')"
    first = kernel.a.execute(cell, cell_id="cell-twice")
    second = kernel.a.execute(cell, cell_id="cell-twice")
    assert len(first.next_inputs) == 1 and second.next_inputs == []
    assert "not inserted again" in second.stdout
    forced = kernel.a.execute(cell.replace("--name", "--insert payload --name"), cell_id="cell-twice")
    assert _code(forced) == _code(first)  # same code, hash and marker on every run


def test_line_form_and_name(kernel):
    run = kernel.a.execute("%keras2torch existing --name MyNet --no-compare", cell_id="cell-line")
    assert run.status == "ok", run.text
    code = _code(run)
    assert "class MyNet(nn.Module)" in code and "my_net = MyNet()" in code
    check = kernel.a.execute(code + "\nprint('DIFF', max_diff(existing, my_net))")
    assert float(check.stdout.split("DIFF ")[1]) < 1e-5


def test_several_models_picks_the_last_assigned(kernel):
    cell = "%%keras2torch --no-compare --name Pick\nsecond = tiny('second', 7)\nfirst = tiny('first', 6)\n"
    run = kernel.a.execute(cell, cell_id="cell-pick")
    assert run.status == "ok", run.text
    assert "converting first, the last one assigned" in run.stdout and "--model" in run.stdout
    assert "nn.Linear(64, 6)" in _code(run)
    chosen = kernel.a.execute(cell.replace("--name", "--model second --name"), cell_id="cell-pick2")
    assert "nn.Linear(64, 7)" in _code(chosen)
    # Same class name from another cell: said, since that cell's generated code now loads these.
    assert "Pick was generated from another cell before (cell-pick)" in chosen.stdout


def test_builder_function_result_and_rebinding(kernel):
    kernel.a.execute("keras_rebound = tiny('old')")
    run = kernel.a.execute(
        "%%keras2torch --no-compare --name Rebound\nkeras_rebound = tiny('new')", cell_id="c-rb"
    )
    assert 'Keras model "new"' in _code(run)


def test_another_cell_magic_below(kernel):
    run = kernel.a.execute(
        "%%keras2torch --no-compare --name Cap\n%%capture cap\ncapped = tiny('cap')\nprint('hidden')"
    )
    assert run.status == "ok", run.text
    assert "class Cap(nn.Module)" in _code(run) and "hidden" not in run.stdout


def test_help_documents_every_option(kernel):
    run = kernel.a.execute("%keras2torch?")
    text = "".join(p["data"]["text/plain"] for p in run.payloads if p.get("source") == "page")
    for option in (
        "--name",
        "--model",
        "--input-format",
        "--input ",
        "--device",
        "--no-compare",
        "--weights",
        "--insert",
    ):
        assert option in text, option


# -- bad input: one clear message, nothing written --------------------------------------------------
BAD = {
    "syntax": ("%%keras2torch\nok_before = 1\nmodel = keras.Sequential(\n", "SyntaxError"),
    "runtime": ("%%keras2torch\nran_before_error = 1\n1 / 0\n", "ZeroDivisionError: division by zero"),
    "no-model": ("%%keras2torch\nnot_a_model = 3\n", "did not create or rebind a Keras model"),
    "model-var-not-keras": (
        "%%keras2torch --model not_keras\nnot_keras = 3\n",
        "not_keras is a int, not a Keras",
    ),
    "model-var-missing": ("%keras2torch nowhere", "no variable named 'nowhere'"),
    "line-without-var": ("%keras2torch --name X", "needs the variable holding the Keras model"),
    "unsupported-layer": (
        "%%keras2torch\nlayers = [keras.Input((4,)), keras.layers.Hashing(num_bins=3, name='hsh')]\n"
        "hashed = keras.Sequential(layers)",
        "'hsh' (Hashing)",
    ),
    "device-unknown": ("%%keras2torch --device tpu\nskipped_cell = tiny()", "--device 'tpu': unknown device"),
    "device-unavailable": ("%%keras2torch --device cuda\nskipped_cell = tiny()", "no CUDA device"),
    "weights-dir-missing": (
        "%%keras2torch --weights /nonexistent-dir/w.safetensors\nskipped_cell = tiny()",
        "does not exist",
    ),
    "weights-suffix": ("%%keras2torch --weights w.txt\nskipped_cell = tiny()", ".safetensors file"),
    "insert-comm-without-extension": ("%%keras2torch --insert comm\nskipped_cell = tiny()", "--insert comm"),
    "bad-name": ("%%keras2torch --name 1Net\nskipped_cell = tiny()", "not a valid Python identifier"),
    "bad-input-shape": (
        "%%keras2torch --input sample\nsample = np.zeros((2, 5, 5, 3))\nm5 = tiny()",
        "--input sample",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gives_one_message_and_writes_nothing(kernel, case):
    cell, message = BAD[case]
    before = kernel.a.execute("print(id(existing), sorted(globals().get('_keras2torch_weights', {})))")
    run = kernel.a.execute(cell, cell_id=f"bad-{case}")
    assert run.status == "error"
    assert message in run.text, run.text
    _no_cell_written(run)
    if case in ("syntax", "runtime"):
        assert len(run.errors) == 1 and "kerastorch_magic" not in "".join(run.errors[0]["traceback"])
        assert "UsageError" not in run.text
    if case == "runtime":  # line numbers are the notebook cell's
        assert "line 3" in "".join(run.errors[0]["traceback"])
        assert kernel.a.execute("print(ran_before_error)").stdout.strip() == "1"
    if "skipped_cell" in cell:  # options are checked before the cell runs
        assert "NameError" in kernel.a.execute("skipped_cell").text
    after = kernel.a.execute("print(id(existing), sorted(globals().get('_keras2torch_weights', {})))")
    assert after.stdout == before.stdout  # nothing the user had changed


# -- --weights: a file the generated cell loads ------------------------------------------------------
@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_weights_file(kernel, tmp_path, suffix):
    path = tmp_path / f"w{suffix}"
    run = kernel.a.execute(
        f"%%keras2torch --no-compare --name FileNet --weights {path}\nfile_model = tiny('file')",
        cell_id="c-w",
    )
    assert run.status == "ok", run.text
    assert path.is_file()
    code = _code(run)
    assert str(path) in code and "_keras2torch_weights" not in code.split("class FileNet")[1]
    kernel.a.execute("_saved_store = _keras2torch_weights; del _keras2torch_weights")
    bound = kernel.a.execute("print('DIFF', max_diff(file_model, file_net))")  # loaded by the magic
    assert float(bound.stdout.split("DIFF ")[1]) < 1e-5, bound.text
    check = kernel.a.execute(code + "\nprint('DIFF', max_diff(file_model, file_net))")
    kernel.a.execute("_keras2torch_weights = _saved_store")
    assert check.status == "ok", check.text
    assert float(check.stdout.split("DIFF ")[1]) < 1e-5


# -- the extension path: comm ----------------------------------------------------------------------
def test_comm_upsert_instead_of_payload(kernel):
    b = kernel.b
    cell = "%%keras2torch --no-compare --name CommNet\ncomm_model = tiny('comm')"
    first = b.execute(cell, cell_id="cell-comm")
    assert first.status == "ok", first.text
    assert first.next_inputs == []
    (upsert,) = first.upserts
    assert upsert["_comm_id"] == kernel.hello["comm_id"]
    assert upsert["_msg"]["parent_header"]["msg_id"] == first.msg_id  # sent during the execution
    assert upsert["source_cell_id"] == "cell-comm" and upsert["class_name"] == "CommNet"
    code = upsert["code"]
    assert upsert["hash"] == hashlib.sha256(code.split("\n", 1)[1].encode()).hexdigest()
    assert MARKER_RE.match(code.split("\n", 1)[0]).groups() == ("cell-comm", upsert["hash"][:16])
    assert re.fullmatch(r"[0-9a-f]{32}", upsert["request_id"])
    assert any("written below by the JupyterLab extension" in d.get("text/html", "") for d in first.displays)
    b.send_comm(
        kernel.hello["comm_id"],
        {
            "type": "upsert_result",
            "request_id": upsert["request_id"],
            "status": "inserted",
            "cell_id": "gen-1",
        },
    )

    second = b.execute(cell, cell_id="cell-comm")
    (again,) = second.upserts
    assert again["hash"] == upsert["hash"] and again["code"] == code
    assert again["request_id"] != upsert["request_id"] and second.next_inputs == []
    b.send_comm(
        kernel.hello["comm_id"],
        {"type": "upsert_result", "request_id": again["request_id"], "status": "error", "message": "boom"},
    )

    third = b.execute(cell, cell_id="cell-comm")
    assert "could not write the previous generated cell: boom" in third.stdout
    recorded = b.execute(
        "from kerastorch_magic.frontend import get_link\n"
        f"print(get_link().results[{upsert['request_id']!r}]['status'])"
    )
    assert recorded.stdout.strip() == "inserted"

    # Meanwhile client a (no extension) still gets payloads.
    other = kernel.a.execute(cell.replace("--name", "--insert payload --name"), cell_id="cell-comm-a")
    assert len(other.next_inputs) == 1 and other.upserts == []


def test_late_client_is_greeted_then_uses_the_comm(kernel):
    c = kernel.client()
    cell = "%%keras2torch --no-compare --name LateNet\nlate = tiny('late')"
    first = c.execute(cell, cell_id="cell-late")
    assert len(first.next_inputs) == 1  # unknown client: fallback, and a fresh hello
    (hello,) = first.comm_data("hello")
    c.send_comm(hello["_comm_id"], {"type": "hello_ack", "version": 1})
    second = c.execute(cell, cell_id="cell-late")
    assert second.next_inputs == [] and len(second.upserts) == 1
    # The extension closing the comm (kernel restart on its side, page closed): back to payloads.
    c.kc.shell_channel.send(c.kc.session.msg("comm_close", {"comm_id": hello["_comm_id"], "data": {}}))
    third = c.execute(cell.replace("--name", "--insert payload --name"), cell_id="cell-late")
    assert len(third.next_inputs) == 1 and third.upserts == []


def test_frontend_initiated_handshake(kernel):
    d = kernel.client()
    _, replies = d.open_comm("keras2torch", {"type": "hello_ack", "version": 1})
    assert [m for m in replies if m["header"]["msg_type"] == "comm_msg"] == []
    run = d.execute(
        "%%keras2torch --no-compare --insert comm --name OpenNet\nopened = tiny('opened')", cell_id="c-o"
    )
    assert run.status == "ok", run.text
    assert len(run.upserts) == 1 and run.next_inputs == []


def test_frontend_initiated_hello_is_answered(kernel):
    e = kernel.client()
    comm_id, replies = e.open_comm("keras2torch", {"type": "hello", "version": 1})
    (answer,) = [m["content"] for m in replies if m["header"]["msg_type"] == "comm_msg"]
    assert answer == {"comm_id": comm_id, "data": {"type": "hello", "version": 1}}
    run = e.execute("%%keras2torch --no-compare --name HelloNet\nhello_model = tiny('hello')", cell_id="c-h")
    assert len(run.upserts) == 1 and run.upserts[0]["_comm_id"] == comm_id and run.next_inputs == []


def test_weight_store_name_taken_by_the_user(kernel):
    kernel.a.execute("_saved_store = _keras2torch_weights; _keras2torch_weights = 'mine'")
    run = kernel.a.execute("%%keras2torch --no-compare\nnever_ran = tiny()", cell_id="c-taken")
    kept = kernel.a.execute("print(_keras2torch_weights); _keras2torch_weights = _saved_store")
    assert run.status == "error" and "is not the magic's weight store" in run.text
    _no_cell_written(run)
    assert kept.stdout.strip() == "mine"
