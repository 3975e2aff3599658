"""Merging layers against Keras, with inputs arriving in different torch layouts."""

import keras
import pytest
from exactness import unwrap
from test_activations import assert_each_output_exact

import kerastorch_magic as k2t

FORMATS = ["channels_first", "channels_last"]
L = keras.layers


def mixed_inputs():
    """Two (N, 4, 4, 3) tensors: one channels-first (a convolution's), one in Keras's layout (a Dense's)."""
    image, other = keras.Input((5, 5, 2), name="image"), keras.Input((4, 4, 5), name="other")
    conv = L.Conv2D(3, 2, name="conv")(image)  # channels-first inside
    dense = L.Dense(3, name="dense_in")(other)  # Keras layout inside
    return [image, other], conv, dense


@pytest.mark.parametrize("fmt", FORMATS)
def test_elementwise_merges(fmt):
    inputs, conv, dense = mixed_inputs()
    third = L.Conv2D(3, 1, name="third")(conv)
    vector = keras.Input((3,), name="vector")
    inputs.append(vector)
    branches = {}
    for cls in (L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum):
        name = cls.__name__
        branches[f"{name}(conv, dense)"] = cls(name=f"{name.lower()}_cd")([conv, dense])
        branches[f"{name}(dense, conv)"] = cls()([dense, conv])
        if cls is not L.Subtract:
            branches[f"{name} of three"] = cls()([dense, conv, third])
            # Keras broadcasts a lower rank input by inserting unit axes after the batch axis.
            branches[f"{name}(conv, vector)"] = cls()([conv, vector])
    model = keras.Model(inputs, list(branches.values()))
    conversion, errors = assert_each_output_exact(model, fmt, list(branches))
    print(f"worst relative error ({fmt}): {max(errors.values()):.2e}")
    code = unwrap(conversion.code)
    # The Dense branch is re-laid to the imageolution's channels-first layout (or the reverse).
    assert "add_cd = image + other.permute(0, 3, 1, 2)" in code
    assert "subtract_cd = image - other.permute(0, 3, 1, 2)" in code
    assert "multiply_cd = image * other.permute(0, 3, 1, 2)" in code
    assert "average_cd = (image + other.permute(0, 3, 1, 2)) / 2" in code
    assert "maximum_cd = torch.maximum(image, other.permute(0, 3, 1, 2))" in code
    assert "minimum_cd = torch.minimum(image, other.permute(0, 3, 1, 2))" in code
    assert "image + vector[:, :, None, None]" in code  # (N, C) -> (N, C, 1, 1) next to NCHW
    # Three inputs: the layout two of them share wins.
    assert "torch.maximum(torch.maximum(other.permute(0, 3, 1, 2), image), third)" in code


@pytest.mark.parametrize("fmt", FORMATS)
def test_broadcasting_lower_rank_inputs(fmt):
    sequence, vector, image = (
        keras.Input((6, 4), name="sequence"),
        keras.Input((4,), name="vector"),
        keras.Input((4, 4, 2), name="image"),
    )
    plain = keras.Input((3, 2, 4), name="plain")  # rank 4 in Keras's layout
    conv1d = L.Conv1D(4, 1, name="conv1d")(sequence)
    conv = L.Conv2D(4, 1, name="conv")(image)
    branches = {
        "(N, L, C) + (N, C), NCL": L.Add()([conv1d, vector]),
        "(N, C) * (N, L, C), NCL": L.Multiply()([vector, conv1d]),
        "(N, H, W, C) + (N, L, C)": L.Add()([conv, L.Reshape((4, 4))(L.Dense(16)(vector))]),
        "(N, C) + (N, H, W, C) Keras layout": L.Add()([plain, vector]),
        "(N, L, C) + (N, H, W, C) Keras layout": L.Add()(
            [plain, L.Dense(4)(L.Reshape((2, 4))(L.Dense(8)(vector)))]
        ),
    }
    model = keras.Model([sequence, vector, image, plain], list(branches.values()))
    code = unwrap(assert_each_output_exact(model, fmt, list(branches))[0].code)
    assert "vector[:, :, None]" in code  # (N, C) next to an NCL sequence


CONCAT_AXES = [-1, 1, 2, 3, -3]


@pytest.mark.parametrize("fmt", FORMATS)
def test_concatenate(fmt):
    inputs, conv, dense = mixed_inputs()
    vector, sequence = keras.Input((3,), name="vector"), keras.Input((6, 2), name="sequence")
    inputs += [vector, sequence]
    branches = {f"axis={axis}": L.Concatenate(axis=axis)([conv, dense]) for axis in CONCAT_AXES}
    branches["three, axis=-1"] = L.Concatenate()([dense, conv, L.Conv2D(2, 1)(conv)])
    branches["vectors"] = L.Concatenate()([vector, L.Dense(4)(vector)])
    conv1d = L.Conv1D(3, 1, name="conv1d")(sequence)
    branches["sequences, axis=1"] = L.Concatenate(axis=1)([conv1d, L.Dense(3)(sequence)])
    branches["sequences, axis=-1"] = L.Concatenate()([conv1d, L.Dense(3)(sequence)])
    model = keras.Model(inputs, list(branches.values()))
    code = unwrap(assert_each_output_exact(model, fmt, list(branches))[0].code)
    assert "concatenate = torch.cat([image, other.permute(0, 3, 1, 2)], dim=1)" in code
    assert "Keras axis -1 is torch dim 1 in the channels-first layout" in code
    assert "concatenate_1 = torch.cat([image, other.permute(0, 3, 1, 2)], dim=2)" in code


@pytest.mark.parametrize("fmt", FORMATS)
def test_dot(fmt):
    a, b = keras.Input((5,), name="a"), keras.Input((5,), name="b")
    s, t = keras.Input((4, 3), name="s"), keras.Input((6, 3), name="t")
    u, w = keras.Input((4, 2), name="u"), keras.Input((3, 5), name="w")
    conv_s = L.Conv1D(3, 1, name="conv_s")(s)  # channels-first inside
    conv_t = L.Conv1D(3, 1, name="conv_t")(t)
    branches = {
        "vectors": L.Dot(axes=1)([a, b]),
        "vectors, normalize": L.Dot(axes=-1, normalize=True)([a, b]),
        "sequences axes=2": L.Dot(axes=2)([s, t]),
        "sequences axes=(1, 1)": L.Dot(axes=(1, 1))([s, u]),
        "sequences axes=(2, 1), normalize": L.Dot(axes=(2, 1), normalize=True)([s, w]),
        "vector . sequence": L.Dot(axes=(1, 2))([L.Dense(3)(a), t]),
        "sequence . vector": L.Dot(axes=(2, 1))([s, L.Dense(3)(b)]),
        "NCL sequences axes=2": L.Dot(axes=2)([conv_s, conv_t]),
        "NCL and NLC, axes=(1, 1)": L.Dot(axes=(1, 1), normalize=True)([conv_s, s]),
        "rank 4 . rank 3": L.Dot(axes=(3, 2))([L.Reshape((2, 2, 3))(s), t]),
    }
    model = keras.Model([a, b, s, t, u, w], list(branches.values()))
    code = unwrap(assert_each_output_exact(model, fmt, list(branches))[0].code)
    assert "dot = torch.sum(a * b, dim=1, keepdim=True)" in code
    assert "F.normalize(a, dim=1, eps=1e-07)" in code  # Keras's epsilon
    # einsum reads each input in its own torch layout: NCL when the input also feeds a Conv1D.
    subscripts = "nka,nkb->nab" if fmt == "channels_first" else "nak,nbk->nab"
    assert f'dot_2 = torch.einsum("{subscripts}", s, t)' in code
    assert 'dot_7 = torch.einsum("nka,nkb->nab", conv_s, conv_t)' in code


def test_masked_inputs_are_refused_where_keras_uses_the_mask():
    tokens = keras.Input((5,), dtype="int32")
    left = L.Embedding(10, 4, mask_zero=True)(tokens)
    right = L.Embedding(10, 4, mask_zero=True)(tokens)
    model = keras.Model(tokens, [L.Multiply(name="mul")([left, right]), L.Add(name="add")([left, right])])
    with pytest.raises(k2t.ConversionError, match="mask") as info:
        k2t.convert(model)
    assert info.value.layers == [("mul", "Multiply")]  # Add's values do not depend on the mask


# -- keras.ops calls sharing these layers' class names ----------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_keras_ops_calls_with_layer_names(fmt):
    """``x + 3.0`` records an ``Add`` node whose constant is no graph input (MobileNetV3 has them)."""
    inputs, conv, dense = mixed_inputs()
    ops = keras.ops
    branches = {
        "x + 3.0": conv + 3.0,
        "3.0 - x": 3.0 - conv,
        "x * (1 / 6)": conv * (1 / 6),
        "hard swish (MobileNetV3)": conv * (L.ReLU(6.0)(conv + 3.0) * (1.0 / 6.0)),
        "ops.maximum(x, 0.0)": ops.maximum(conv, 0.0),
        "ops.minimum(2.0, x)": ops.minimum(2.0, conv),
        "ops.maximum(x, y)": ops.maximum(conv, dense),
        "ops.add mixed layouts": ops.add(dense, conv),
        "ops.subtract": ops.subtract(conv, dense),
        "ops.concatenate": ops.concatenate([conv, dense], axis=-1),
        "ops.softmax": ops.softmax(conv, axis=1),
        "activations.relu op": keras.activations.relu(conv, max_value=4.0, negative_slope=0.1),
    }
    model = keras.Model(inputs, list(branches.values()))
    code = unwrap(assert_each_output_exact(model, fmt, list(branches), scale=3.0)[0].code)
    assert "image + 3.0" in code
    assert "3.0 - image" in code
    assert "torch.clamp(image, min=0.0)" in code
    assert "torch.clamp(image, max=2.0)" in code
