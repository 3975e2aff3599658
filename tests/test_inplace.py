"""ReLUs and residual adds in place (``F.relu(x, inplace=True)``, ``x += shortcut``) only where no
other name can see the tensor.

The rule is checked on statement lists (aliases, modules that may return their input, a ReLU
reading another name, adds that might broadcast), and on a residual CNN with random weights and
BatchNorm statistics: exact against Keras, the same outputs and gradients in train mode as the
out-of-place code, and no in-place op in the class ``compare`` traces.
"""

from __future__ import annotations

import keras
import numpy as np
import torch
from exactness import assert_exact, random_inputs, randomise_weights

import kerastorch_magic as k2t
from kerastorch_magic import codegen
from kerastorch_magic.inplace import in_place_lines

DECLARATIONS = [
    codegen.Declaration("conv", "nn.Conv2d(3, 3, kernel_size=1)", None, []),
    codegen.Declaration("bn", "nn.BatchNorm2d(3)", None, []),
    codegen.Declaration("drop", "nn.Dropout(0.5)", None, []),
]


def _rewritten(*lines: str, alike: bool = True) -> dict[int, str]:
    """The in-place lines for ``lines``; ``alike``: the adds' operands have the sum's shape."""
    statements = []
    for line in lines:
        target, expr = line.split(" = ", 1)
        statements.append(codegen.Statement(target, expr, alike=alike and " + " in expr))
    return in_place_lines(statements, DECLARATIONS)


def test_a_relu_of_a_tensor_just_made_is_in_place():
    assert _rewritten("x = self.conv(x)", "x = F.relu(x)") == {1: "x = F.relu(x, inplace=True)"}
    assert _rewritten("x = F.relu6(self.bn(x))") == {0: "x = F.relu6(self.bn(x), inplace=True)"}
    assert _rewritten("x = shortcut + x", "x = F.relu(x)", alike=False) == {1: "x = F.relu(x, inplace=True)"}


def test_a_residual_add_into_a_tensor_just_made_is_in_place():
    assert _rewritten("x = self.bn(x)", "x = shortcut + x") == {1: "x += shortcut"}
    assert _rewritten("x = self.conv(x)", "x = x + shortcut") == {1: "x += shortcut"}
    assert _rewritten("x = a * b", "x = x + c") == {1: "x += c"}  # a product is a new tensor
    assert _rewritten("x = self.conv(x)", "x = shortcut + x", "x = F.relu(x)") == {
        1: "x += shortcut",
        2: "x = F.relu(x, inplace=True)",
    }


def test_an_add_that_may_broadcast_or_share_a_tensor_stays_out_of_place():
    # the converter did not vouch for equal shapes and dtypes: x might be the smaller operand
    assert _rewritten("x = self.bn(x)", "x = shortcut + x", alike=False) == {}
    assert _rewritten("x = self.drop(x)", "x = shortcut + x") == {}  # eval Dropout: the input
    assert _rewritten("x = shortcut + x") == {}  # the caller's tensor
    assert _rewritten("x = self.conv(x)", "y = x + shortcut") == {}  # x still names it
    assert _rewritten("x = self.conv(x)", "x = x + x") == {}


def test_a_tensor_another_name_may_share_stays_out_of_place():
    assert _rewritten("x = self.conv(x)", "shortcut = x", "x = F.relu(x)") == {}  # an alias
    assert _rewritten("x = self.drop(x)", "x = F.relu(x)") == {}  # eval Dropout returns its input
    assert _rewritten("y = self.conv(x)", "z = F.relu(y)") == {}  # y still names it afterwards
    assert _rewritten("x = F.relu(x)") == {}  # the caller's input
    assert _rewritten("x = F.relu(self.conv(x) + 1)") == {}  # not one module call
    assert _rewritten("x = self.conv(x)", "x = F.gelu(x)") == {}  # ReLU and ReLU6 only
    assert _rewritten("x = self.conv(x)", "x = F.relu(x) + F.relu(x)") == {}  # not one call


def _residual_cnn():
    inputs = keras.Input((10, 10, 3))
    x = keras.layers.Conv2D(6, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    shortcut = x
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(6, 1)(x)
    x = keras.layers.ReLU()(keras.layers.Add()([shortcut, x]))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="relu")(x))


def test_residual_cnn_is_exact_and_trains_like_the_out_of_place_code():
    model = _residual_cnn()
    inputs = random_inputs(model)
    randomise_weights(model, inputs=inputs)
    conversion, _ = assert_exact(model, inputs=inputs, randomise=False)
    assert conversion.code.count("inplace=True") == 4, conversion.code
    assert "x += shortcut" in conversion.code, conversion.code
    namespace: dict = {}
    code = conversion.code.replace(", inplace=True", "").replace("x += shortcut", "x = shortcut + x")
    exec(compile(code, "<out of place>", "exec"), namespace)  # noqa: S102
    plain = namespace[conversion.class_name]()
    plain.load_state_dict(conversion.state_dict)
    x = torch.from_numpy(np.ascontiguousarray(conversion.inputs[0].to_torch_layout(inputs[0])))
    results = []
    for module in (conversion.build().train(), plain.train()):
        out = module(x)
        out.square().mean().backward()
        results.append((out.detach(), {n: p.grad for n, p in module.named_parameters()}))
    (out, grads), (out_ref, grads_ref) = results
    torch.testing.assert_close(out, out_ref, rtol=0, atol=0)
    for name in grads_ref:
        torch.testing.assert_close(grads[name], grads_ref[name], rtol=0, atol=0, msg=name)


def test_the_traced_class_compare_runs_has_no_in_place_op():
    model = _residual_cnn()
    conversion = k2t.convert(model)
    assert "inplace=True" in conversion.code
    assert "inplace=True" not in codegen.render(conversion._source, trace=True)
    result = k2t.compare(model, conversion, device="cpu")
    assert result.ok, result.to_dataframe()
    assert set(result.to_dataframe()["status"]) == {"ok"}
