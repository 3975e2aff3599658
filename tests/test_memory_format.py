"""The generated class runs its convolutions on channels_last memory, and only strides change.

A channels-first image input is copied once into ``torch.channels_last`` memory at the top of
``forward`` (oneDNN's and cuDNN's native layout: without it, eager torch reorders every
activation twice around each convolution). Checked on a small CNN with random weights and
BatchNorm statistics: exact against Keras, the activations really are channels_last strided
after every convolution, and outputs and gradients equal the same code without the copy, in
train mode too. The copy is left out where it cannot help: Keras's layout (its ``permute`` has
those strides already), and inputs of models that do not convolve.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import torch
from exactness import assert_exact, random_inputs, randomise_weights

import kerastorch_magic as k2t

LINE_2D = "x = x.contiguous(memory_format=torch.channels_last)"


def _cnn():
    """Conv, BatchNorm, depthwise conv, a residual add, pooling and a 4-D and a 2-D output."""
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", strides=2)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    shortcut = x
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = keras.layers.Conv2D(8, 1)(x)
    features = keras.layers.Add()([shortcut, x])
    pooled = keras.layers.GlobalAveragePooling2D()(keras.layers.MaxPooling2D()(features))
    logits = keras.layers.Dense(4)(pooled)
    return keras.Model(inputs, [features, logits])


def _without_copy(conversion) -> torch.nn.Module:
    """The generated class with the channels_last line removed, Keras's weights loaded."""
    code = conversion.code.replace(LINE_2D, "pass")
    assert code != conversion.code
    namespace: dict = {}
    exec(compile(code, "<without channels_last>", "exec"), namespace)  # noqa: S102
    module = namespace[conversion.class_name]()
    module.load_state_dict(conversion.state_dict)
    return module


def test_convolutions_run_on_channels_last_memory_and_stay_exact():
    model = _cnn()
    conversion, _ = assert_exact(model)
    assert conversion.code.count(LINE_2D) == 1
    module = conversion.build()
    strided = {}
    for name, submodule in module.named_modules():
        if isinstance(submodule, (torch.nn.Conv2d, torch.nn.BatchNorm2d)):
            submodule.register_forward_hook(
                lambda m, args, out, name=name: strided.__setitem__(
                    name, out.is_contiguous(memory_format=torch.channels_last)
                )
            )
    x = torch.randn(2, 3, 12, 12)
    assert x.is_contiguous()  # a plain (N, C, H, W) tensor goes in
    with torch.no_grad():
        features, logits = module(x)
    assert len(strided) == 4 and all(strided.values()), strided
    assert features.shape == (2, 8, 6, 6) and logits.shape == (2, 4)


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_only_strides_change_outputs_and_gradients_are_the_same(mode):
    model = _cnn()
    inputs = random_inputs(model)
    randomise_weights(model, inputs=inputs)
    conversion = k2t.convert(model)
    fast, plain = conversion.build(), _without_copy(conversion)
    getattr(fast, mode)(), getattr(plain, mode)()
    x = torch.from_numpy(np.ascontiguousarray(conversion.inputs[0].to_torch_layout(inputs[0])))
    results = []
    for module in (fast, plain):
        features, logits = module(x)
        (features.square().mean() + logits.square().mean()).backward()
        grads = {name: p.grad for name, p in module.named_parameters()}
        results.append((features.detach(), logits.detach(), grads))
    (features, logits, grads), (features_ref, logits_ref, grads_ref) = results
    torch.testing.assert_close(features, features_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logits, logits_ref, rtol=1e-5, atol=1e-6)
    assert grads.keys() == grads_ref.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], grads_ref[name], rtol=1e-4, atol=1e-6, msg=name)


def test_keras_layout_needs_no_copy():
    """With ``input_format="channels_last"`` the input's permute already has those strides."""
    conversion, _ = assert_exact(_cnn(), input_format="channels_last")
    assert "memory_format" not in conversion.code
    module = conversion.build()
    seen = []
    module.get_submodule("conv2d").register_forward_hook(
        lambda m, args, out: seen.append(out.is_contiguous(memory_format=torch.channels_last))
    )
    with torch.no_grad():
        module(torch.randn(2, 12, 12, 3))
    assert seen == [True]


def test_models_that_do_not_convolve_get_no_copy():
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.MaxPooling2D()(inputs)
    x = keras.layers.Dense(5)(keras.layers.Flatten()(x))
    conversion, _ = assert_exact(keras.Model(inputs, x))
    assert "memory_format" not in conversion.code


def test_volumes_use_the_3d_format():
    inputs = keras.Input((4, 6, 6, 2))
    x = keras.layers.Conv3D(3, 3, padding="same")(inputs)
    x = keras.layers.GlobalAveragePooling3D()(x)
    conversion, _ = assert_exact(keras.Model(inputs, x))
    assert conversion.code.count("x = x.contiguous(memory_format=torch.channels_last_3d)") == 1


class _ConvBlock(keras.layers.Layer):
    """A custom layer convolving inside its call(): converted by tracing it."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(4, 3, padding="same")

    def call(self, x):
        return keras.ops.relu(self.conv(x)) + 1.0


def test_a_convolution_inside_a_traced_layer_counts():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.GlobalAveragePooling2D()(_ConvBlock()(inputs))
    conversion, _ = assert_exact(keras.Model(inputs, x))
    assert conversion.code.count(LINE_2D) == 1, conversion.code
