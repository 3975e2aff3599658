"""The README cannot drift from the code: its generated sections, examples and options are checked.

* the supported-layers and supported-ops sections equal what scripts/supported_layers.py generates
  from the registry;
* the Python API example and the custom-converter example (the code blocks after the
  ``<!-- readme-test: NAME -->`` markers) run as written, and the custom layers convert exactly;
* the sample of generated code is what ``convert`` produces today;
* every option of ``%%keras2torch`` is documented; the two commands exist.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import keras
from exactness import assert_exact
from test_seed_examples import sequential_cnn

import kerastorch_magic as k2t

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def readme() -> str:
    return README.read_text()


def code_block(name: str) -> str:
    """The fenced python block right after ``<!-- readme-test: name -->``."""
    match = re.search(rf"<!-- readme-test: {re.escape(name)} -->\s*```python\n(.*?)```", readme(), re.S)
    assert match, f"README.md has no python block marked readme-test: {name}"
    return match.group(1)


def test_supported_layers_and_ops_sections_are_generated_from_the_registry():
    # A fresh interpreter: converters that other tests register must not count.
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "supported_layers.py"), "--check"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_api_example_runs(capsys):
    exec(compile(code_block("api"), "README.md:api", "exec"), {"__name__": "readme_api"})


def test_custom_converter_example_converts_exactly(restore_registry, capsys):
    namespace = {"__name__": "readme_custom_converter"}
    exec(compile(code_block("custom-converter"), "README.md:custom-converter", "exec"), namespace)
    assert {"L2Normalize", "ScaledDense"} <= set(k2t.supported_layers())
    printed = capsys.readouterr().out
    assert "F.normalize(x, dim=1, eps=1e-6)" in printed  # Keras axis -1 found at torch dim 1
    assert "nn.Linear(1568, 10, bias=False)" in printed
    model = namespace["model"]
    for input_format in ("channels_first", "channels_last"):
        conversion, _ = assert_exact(model, input_format)  # random weights, ruff-clean, standalone
        assert "F.normalize" in conversion.code
    # The custom layers also work inside a functional graph with a branch.
    inputs = keras.Input((8, 8, 4))
    a = namespace["L2Normalize"](axis=-1)(keras.layers.Conv2D(4, 1)(inputs))
    merged = keras.layers.Add()([a, inputs])
    out = namespace["ScaledDense"](3, scale=2.0)(keras.layers.GlobalAveragePooling2D()(merged))
    assert_exact(keras.Model(inputs, out))


def test_generated_code_sample_is_current():
    """The README's sample class is what convert() writes for the guide's Sequential CNN."""
    match = re.search(r"(class SequentialCNN\(nn\.Module\):.*?)\n\n\nsequential_cnn = ", readme(), re.S)
    assert match, "README.md lost its sample of generated code"
    model = sequential_cnn()  # a fresh session (conftest): layer names conv2d, conv2d_1, dense...
    code = k2t.convert(model, class_name="SequentialCNN").code
    generated = code[code.index("class SequentialCNN") :].rstrip("\n")
    assert match.group(1) == generated, (
        "README.md's sample of generated code is stale; replace it with:\n" + generated
    )


def test_every_magic_option_is_documented():
    from kerastorch_magic.magic import Keras2TorchMagics

    parser = Keras2TorchMagics.keras2torch.parser
    options = [s for action in parser._actions for s in action.option_strings if s.startswith("--")]
    text = readme()
    assert options, "the magic has options"
    for option in options:
        assert f"| `{option}" in text, f"README.md's options table lacks {option}"


def test_the_two_commands_exist():
    text = readme()
    for command in ("bash scripts/quickstart.sh", "bash scripts/test.sh"):
        assert command in text
        assert (ROOT / command.split()[1]).is_file()


def test_widget_screenshot_is_committed_and_small():
    image = ROOT / "docs" / "widget.png"
    assert "](docs/widget.png)" in readme()
    assert image.is_file() and image.stat().st_size < 300_000


def test_supported_ops_section_follows_the_layers_section():
    text = readme()
    headings = ("## Supported layers", "## Supported keras.ops", "## Pitfalls")
    assert [text.index(h) for h in headings] == sorted(text.index(h) for h in headings)
    assert "override=True" in text and "operation=True" in text  # the registry's two options
