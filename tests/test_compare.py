"""compare(): statistics, the DataFrame, injected errors flagged at the right layer, hand ports."""

import math

import keras
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from exactness import randomise_weights
from test_seed_examples import sequential_cnn
from torch import nn

import kerastorch_magic as k2t
from kerastorch_magic import stats
from kerastorch_magic.compare import keras_side, run

COLUMNS = [
    "index",
    "keras_layer",
    "keras_class",
    "keras_shape",
    "torch_module",
    "torch_shape",
    "keras_params",
    "torch_params",
    "max_abs_diff",
    "rel_diff",
    "cosine",
    "status",
]


def small_cnn():
    return keras.Sequential(
        [
            keras.Input((24, 24, 3)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )


def residual_model():
    inputs = keras.Input((16, 16, 4), name="image")
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="left")(inputs)
    y = keras.layers.Conv2D(4, 1, name="right")(inputs)
    x = keras.layers.Add(name="merge")([x, y])
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(x), name="residual")


# --------------------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------------------
def test_numbers_on_known_tensors():
    keras_t = torch.tensor([[1.0, -2.0, 4.0, 0.0]])
    torch_t = torch.tensor([[1.0, -2.0, 3.0, 0.5]])
    numbers = stats.numbers(keras_t, torch_t)
    assert numbers.max_abs_diff == pytest.approx(1.0)
    assert numbers.rel_diff == pytest.approx(1.0 / 4.0)
    expected_cos = float(F.cosine_similarity(keras_t, torch_t).item())
    assert numbers.cosine == pytest.approx(expected_cos, rel=1e-6)
    assert numbers.keras_mean == pytest.approx(0.75)
    assert numbers.torch_std == pytest.approx(float(torch_t.std(correction=0)))
    assert numbers.finite


def test_numbers_identical_zero_and_nan():
    zeros = torch.zeros(3, 4)
    same = stats.numbers(zeros, zeros.clone())
    assert (same.max_abs_diff, same.rel_diff, same.cosine) == (0.0, 0.0, 1.0)
    bad = stats.numbers(torch.ones(5), torch.tensor([1.0, float("nan"), 1.0, 1.0, 1.0]))
    assert not bad.finite and math.isnan(bad.rel_diff)
    assert stats.status(bad.rel_diff, 1e-4) == "fail"


def test_nonfinite_values_agree_only_where_both_sides_have_them():
    inf, nan = float("inf"), float("nan")
    keras_t = torch.tensor([1.0, inf, -inf, nan, 2.0])
    both = stats.numbers(keras_t, torch.tensor([1.0, inf, -inf, nan, 2.5]))
    assert both.nonfinite_both == 3 and both.finite
    assert both.rel_diff == pytest.approx(0.5 / 2.0)  # measured on the finite entries
    assert stats.rel_diff(keras_t, torch.tensor([1.0, inf, -inf, nan, 2.0])) == 0.0
    for torch_t in (
        torch.tensor([1.0, -inf, -inf, nan, 2.0]),  # an infinity of the other sign
        torch.tensor([1.0, inf, -inf, 0.0, 2.0]),  # NaN on one side only
        torch.tensor([1.0, inf, -inf, nan, inf]),  # an extra infinity
    ):
        worse = stats.numbers(keras_t, torch_t)
        assert worse.nonfinite_both == 0 and math.isnan(worse.rel_diff)
        assert stats.status(worse.rel_diff, 1e-5) == "fail"
        assert math.isnan(stats.rel_diff(keras_t, torch_t))


def test_a_model_that_overflows_in_keras_too_is_not_a_conversion_error():
    """exp() of large pre-activations is inf in Keras and in the port, at the same places."""
    inputs = keras.Input((4,))
    x = keras.layers.Dense(6, activation="exponential")(inputs)
    outputs = keras.layers.Dense(2)(x)
    model = keras.Model(inputs, outputs)
    kernel, bias = model.layers[1].get_weights()
    model.layers[1].set_weights([np.full_like(kernel, 40.0), bias])  # exp(40 * sum(x)) overflows
    x_in = np.abs(np.random.default_rng(0).normal(size=(2, 4))).astype("float32") + 1.0
    result = k2t.compare(model, k2t.convert(model), inputs=x_in, device="cpu")
    dense = result.layers[0]
    assert dense.numbers.nonfinite_both == 12 and dense.status(result.tolerance) == "ok"
    assert result.first_failure is None, result.summary()
    assert "NaN/inf in 2 layer outputs, on both sides at the same places" in result.summary()


def test_lean_relative_error_follows_the_same_rule():
    keras_t, torch_t = torch.randn(3, 50), torch.randn(3, 50)
    assert stats.rel_diff(keras_t, torch_t) == pytest.approx(
        stats.numbers(keras_t, torch_t).rel_diff, rel=1e-6
    )
    zeros = torch.zeros(4)
    assert stats.rel_diff(zeros, zeros) == 0.0 and stats.rel_diff(zeros, torch.ones(4)) == 1.0
    assert math.isnan(stats.rel_diff(torch.ones(2), torch.tensor([1.0, float("nan")])))
    assert math.isnan(stats.rel_diff(torch.tensor([1.0, float("inf")]), torch.ones(2)))


@pytest.mark.parametrize(
    ("rel", "status"),
    [(0.0, "ok"), (1e-5, "ok"), (2e-5, "warn"), (1e-4, "warn"), (1.01e-4, "fail"), (math.inf, "fail")],
)
def test_status_bands(rel, status):
    assert stats.status(rel, 1e-4) == status
    assert stats.status(rel, 1e-4, compared=False) == "skip"


def test_histogram_and_previews_are_small():
    keras_t = torch.randn(2, 200, 120, 32)
    torch_t = keras_t.clone()
    torch_t[0, 10, 10, 30] += 5.0  # one wrong pixel in channel 30
    hist = stats.histogram(keras_t, torch_t)
    assert len(hist.keras) == len(hist.torch) == stats.HIST_BINS
    assert sum(hist.keras) == len(keras_t.reshape(-1)[:: -(-keras_t.numel() // stats.HIST_SAMPLES)])
    preview = stats.preview(keras_t, torch_t)
    assert preview.kind == "image"
    channels, height, width = preview.keras.shape
    assert channels == stats.PREVIEW_CHANNELS and max(height, width) == stats.PREVIEW_SIDE
    assert preview.keras.dtype == np.uint8 and preview.diff.shape == preview.keras.shape
    assert 30 in preview.channels  # the worst channel is always shown
    worst = preview.channels.index(30)
    assert preview.diff[worst].max() == 255 and preview.diff_high[worst] == pytest.approx(5.0)
    vector = stats.preview(torch.randn(2, 1000), torch.randn(2, 1000))
    assert vector.kind == "lines" and vector.keras.shape == (1, stats.PREVIEW_LENGTH)
    keras_seq = torch.randn(2, 500, 4)
    torch_seq = keras_seq.clone()
    torch_seq[0, 321, 2] += 3.0  # one wrong step of feature 2
    sequence = stats.preview(keras_seq, torch_seq)
    # A (features x time) map: every feature keeps its row, time is downsampled on its own.
    assert sequence.kind == "image" and sequence.keras.shape == (1, 4, stats.PREVIEW_SIDE)
    assert sequence.channels == [] and "4 features over 500 steps" in sequence.label
    assert sequence.diff[0].max() == 255 and int(sequence.diff[0].argmax()) // stats.PREVIEW_SIDE == 2
    short = stats.preview(torch.randn(2, 5, 3), torch.randn(2, 5, 3))
    assert short.kind == "image" and short.keras.shape == (1, 3, 5) and "(shown" not in short.label


# --------------------------------------------------------------------------------------------------
# our conversions
# --------------------------------------------------------------------------------------------------
def test_exact_conversion_is_all_ok_and_dataframe_has_one_row_per_layer():
    model = small_cnn()
    randomise_weights(model)
    conversion = k2t.convert(model)
    result = k2t.compare(model, conversion, device="cpu")
    assert result.ok, result.to_dataframe()
    assert result.first_failure is None and result.error is None
    frame = result.to_dataframe()
    assert list(frame.columns[: len(COLUMNS)]) == COLUMNS
    assert len(frame) == len(conversion.traces) == len(model.layers)
    assert list(frame["keras_layer"]) == [layer.name for layer in model.layers]
    assert set(frame["status"]) == {"ok"}
    assert (frame["cosine"] > 0.999999).all()
    conv = frame.iloc[0]
    assert conv["keras_shape"] == (2, 22, 22, 8) and conv["torch_shape"] == (2, 8, 22, 22)
    assert conv["keras_params"] == conv["torch_params"] == 8 * 27 + 8
    assert frame.iloc[1]["torch_params"] == frame.iloc[1]["keras_params"] == 32  # BN statistics counted
    assert result.info.torch_device == "cpu"
    assert result.info.keras_device.startswith(keras.backend.backend())
    assert "random normal data (seed 0), batch 2" in result.info.input
    assert set(result.info.seconds) == {"keras", "torch", "statistics", "total"}


@pytest.mark.parametrize("fmt", ["channels_first", "channels_last"])
def test_functional_model_with_branches(fmt):
    model = residual_model()
    randomise_weights(model)
    result = k2t.compare(model, k2t.convert(model, input_format=fmt), device="cpu")
    assert result.ok, result.to_dataframe()
    assert list(result.to_dataframe()["keras_layer"]) == ["left", "right", "merge", "pool", "head"]
    assert result.layers[-1].is_output


def test_perturbed_weight_fails_at_that_layer_only_from_there():
    model = small_cnn()
    randomise_weights(model)
    conversion = k2t.convert(model)
    weight = conversion.state_dict["conv2d_1.weight"]
    weight[0, 0, 0, 0] += 0.5
    frame = k2t.compare(model, conversion, device="cpu").to_dataframe()
    statuses = dict(zip(frame["keras_layer"], frame["status"]))
    assert statuses["conv2d"] == statuses["batch_normalization"] == statuses["max_pooling2d"] == "ok"
    assert statuses["conv2d_1"] == "fail"
    result = k2t.compare(model, conversion, device="cpu")
    assert not result.ok
    assert result.first_failure.keras_layer == "conv2d_1"
    assert "first: 'conv2d_1'" in result.summary()


def test_isolate_shows_each_layer_own_error():
    model = small_cnn()
    randomise_weights(model)
    conversion = k2t.convert(model)
    conversion.state_dict["conv2d_1.weight"][0, 0, 0, 0] += 0.5
    chained = k2t.compare(model, conversion, device="cpu")
    isolated = k2t.compare(model, conversion, device="cpu", isolate=True)
    assert [layer.status(1e-4) for layer in chained.layers] == ["ok"] * 3 + ["fail"] * 3
    # Fed Keras's inputs, the layers after the wrong convolution are exact again.
    assert [layer.status(1e-4) for layer in isolated.layers] == ["ok"] * 3 + ["fail"] + ["ok"] * 2
    assert isolated.first_failure.keras_layer == "conv2d_1"
    assert isolated.info.isolate is True and "each layer fed Keras" in isolated.to_html()


def test_isolate_with_a_hand_port():
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(32, (3, 3)),
            keras.layers.BatchNormalization(),
            keras.layers.MaxPooling2D((2, 2)),
            keras.layers.Conv2D(8, (3, 3)),
        ]
    )
    randomise_weights(model)

    class Port(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 32, kernel_size=3)
            self.bn = nn.BatchNorm2d(32)  # eps 1e-5: the mistake
            self.pool = nn.MaxPool2d(2)
            self.conv2 = nn.Conv2d(32, 8, kernel_size=3)

        def forward(self, x):
            return self.conv2(self.pool(self.bn(self.conv(x))))

    port = Port().eval()
    _copy_conv(model.layers[0], port.conv)
    _copy_conv(model.layers[3], port.conv2)
    gamma, beta, mean, variance = (torch.from_numpy(w) for w in model.layers[1].get_weights())
    port.bn.weight.data, port.bn.bias.data, port.bn.running_mean, port.bn.running_var = (
        gamma,
        beta,
        mean,
        variance,
    )
    mapping = {"conv2d": "conv", "batch_normalization": "bn", "max_pooling2d": "pool", "conv2d_1": "conv2"}
    chained = k2t.compare(model, port, mapping=mapping, device="cpu")
    isolated = k2t.compare(model, port, mapping=mapping, device="cpu", isolate=True)
    assert [layer.status(1e-4) for layer in chained.layers] == ["ok", "fail", "fail", "fail"]
    assert [layer.status(1e-4) for layer in isolated.layers] == ["ok", "fail", "ok", "ok"]
    assert not port.training


def test_tolerance_decides_the_status():
    model = small_cnn()
    randomise_weights(model)
    conversion = k2t.convert(model)
    conversion.state_dict["batch_normalization.running_var"] *= 1.001  # relative error ~5e-4
    strict = k2t.compare(model, conversion, device="cpu")
    loose = k2t.compare(model, conversion, device="cpu", tolerance=2e-3)
    assert strict.first_failure.keras_layer == "batch_normalization"
    assert loose.ok and loose.status(1) == "warn"
    strict.tolerance = 1e-2  # statuses follow the tolerance, the statistics stay
    assert strict.ok


def test_seeded_random_inputs_and_user_inputs():
    model = residual_model()
    conversion = k2t.convert(model)
    first = k2t.compare(model, conversion, device="cpu", seed=3)
    again = k2t.compare(model, conversion, device="cpu", seed=3)
    other = k2t.compare(model, conversion, device="cpu", seed=4)
    means = [r.layers[-1].numbers.keras_mean for r in (first, again, other)]
    assert means[0] == means[1] != means[2]

    data = np.random.default_rng(5).normal(size=(3, 16, 16, 4)).astype("float32")
    result = k2t.compare(model, conversion, inputs=data, device="cpu")
    with run._full_float32():  # as compare() runs Keras: no TF32 on a GPU
        expected = keras.ops.convert_to_numpy(model(data, training=False))
    assert result.layers[-1].keras_shape == (3, 3)
    assert result.layers[-1].numbers.keras_mean == pytest.approx(float(expected.mean()), rel=1e-5)
    assert "your input" in result.info.input
    by_name = k2t.compare(model, conversion, inputs={"image": data}, device="cpu")
    assert by_name.ok
    with pytest.raises(ValueError, match="Keras model takes"):
        k2t.compare(model, conversion, inputs=data.transpose(0, 3, 1, 2), device="cpu")


def test_keras_activations_are_streamed_not_kept(monkeypatch):
    """Every Keras activation is dropped once compared and consumed: memory stays flat."""
    layers = [keras.Input((64,))] + [keras.layers.Dense(64, activation="relu") for _ in range(40)]
    model = keras.Sequential(layers)
    alive = []
    original = keras_side.KerasStepper._step

    def step(self):
        original(self)
        alive.append(len(self.values))

    monkeypatch.setattr(keras_side.KerasStepper, "_step", step)
    result = k2t.compare(model, k2t.convert(model), device="cpu")
    assert result.ok and len(result.layers) == 40
    assert max(alive) <= 3, alive


def test_nested_model_rows_use_qualified_names():
    inner = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(6, activation="tanh"), keras.layers.Dense(5)], name="inner"
    )
    inputs = keras.Input((8,))
    outputs = keras.layers.Dense(2)(inner(inputs))
    model = keras.Model(inputs, outputs, name="outer")
    randomise_weights(model)
    result = k2t.compare(model, k2t.convert(model), device="cpu")
    assert result.ok
    assert [layer.keras_layer for layer in result.layers] == ["inner/dense", "inner/dense_1", "dense_2"]


def test_conversion_of_another_model_is_refused():
    conversion = k2t.convert(small_cnn())
    with pytest.raises(ValueError, match="not made from this model"):
        k2t.compare(residual_model(), conversion)


# --------------------------------------------------------------------------------------------------
# hand-written ports (the guide's mistakes, shared/seed Examples 2 and 3)
# --------------------------------------------------------------------------------------------------
class PyTorchModel(nn.Module):
    """The guide's Example 2 port, verbatim: NHWC input, x.view flatten in (C, H, W) order."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.pool1 = nn.MaxPool2d(kernel_size=2)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.pool2 = nn.MaxPool2d(kernel_size=2)
        self.fc = nn.Linear(64 * 14 * 14, 10)

    def forward(self, x):
        x = x.permute(0, 3, 1, 2)
        x = F.relu(self.conv1(x))
        x = self.pool1(x)
        x = F.relu(self.conv2(x))
        x = self.pool2(x)
        x = x.view(-1, 64 * 14 * 14)
        return F.softmax(self.fc(x), dim=1)


class ChannelsFirstPort(PyTorchModel):
    """Example 2 as a user feeding NCHW writes it: the same flatten-order mistake."""

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = self.pool1(x)
        x = F.relu(self.conv2(x))
        x = self.pool2(x)
        x = x.view(-1, 64 * 14 * 14)
        return F.softmax(self.fc(x), dim=1)


class PyTorchModelBN(nn.Module):
    """The guide's Example 3 port: nn.BatchNorm2d(32) keeps torch's eps=1e-5."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 32, kernel_size=3)
        self.bn = nn.BatchNorm2d(32)
        self.pool = nn.MaxPool2d(kernel_size=2)

    def forward(self, x):
        x = x.permute(0, 3, 1, 2)
        x = F.relu(self.conv(x))
        x = self.bn(x)
        return self.pool(x)


def _copy_conv(keras_layer, torch_conv):
    kernel, bias = keras_layer.get_weights()
    torch_conv.weight.data = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())
    torch_conv.bias.data = torch.from_numpy(bias)


guide_sequential = sequential_cnn  # the guide's Example 2 (tests/test_seed_examples.py)


GUIDE_MAPPING = {
    "conv2d": "conv1",
    "max_pooling2d": "pool1",
    "conv2d_1": "conv2",
    "max_pooling2d_1": "pool2",
    "dense": "fc",
}


def test_guide_flatten_order_mistake_fails_at_the_dense_layer():
    model = guide_sequential()
    port = ChannelsFirstPort()
    _copy_conv(model.layers[0], port.conv1)
    _copy_conv(model.layers[2], port.conv2)
    kernel, bias = model.layers[5].get_weights()
    port.fc.weight.data = torch.from_numpy(kernel.T.copy())  # the guide's copy: (H, W, C) rows as is
    port.fc.bias.data = torch.from_numpy(bias)
    result = k2t.compare(model, port, mapping=GUIDE_MAPPING, device="cpu")
    frame = result.to_dataframe().set_index("keras_layer")
    assert result.error is None
    assert result.info.input_format == "channels_first"
    for name in ("conv2d", "max_pooling2d", "conv2d_1", "max_pooling2d_1"):
        assert frame.loc[name, "status"] == "ok", frame
    assert frame.loc["flatten", "status"] == "skip"
    assert frame.loc["dense", "status"] == "fail"
    assert result.first_failure.keras_layer == "dense"
    assert frame.loc["dense", "isolated_rel_diff"] > 1e-4  # wrong fed Keras's own input too
    assert not result.ok
    assert "fused activation 'relu'" in frame.loc["conv2d", "note"]

    # Reordering the Dense weights to (C, H, W) fixes it: the comparison then passes.
    fixed = kernel.reshape(14, 14, 64, 10).transpose(2, 0, 1, 3).reshape(-1, 10)
    port.fc.weight.data = torch.from_numpy(fixed.T.copy())
    assert k2t.compare(model, port, mapping=GUIDE_MAPPING, device="cpu").ok


def test_guide_batchnorm_eps_mistake_fails_at_the_batchnorm_layer():
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(32, (3, 3), activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.MaxPooling2D((2, 2)),
        ]
    )
    port = PyTorchModelBN()
    _copy_conv(model.layers[0], port.conv)
    gamma, beta, mean, variance = model.layers[1].get_weights()  # Keras's own (fresh) statistics
    port.bn.weight.data, port.bn.bias.data = torch.from_numpy(gamma), torch.from_numpy(beta)
    port.bn.running_mean.data, port.bn.running_var.data = torch.from_numpy(mean), torch.from_numpy(variance)
    mapping = {"conv2d": "conv", "batch_normalization": "bn", "max_pooling2d": "pool"}
    result = k2t.compare(model, port, mapping=mapping, device="cpu")
    statuses = list(result.to_dataframe()["status"])
    assert statuses == ["ok", "fail", "fail"]
    assert result.first_failure.keras_layer == "batch_normalization"
    assert result.first_failure.rel_diff > 1e-4
    # The drift check does not excuse it: wrong on Keras's own input too; the pooling after it is
    # right and fails only through it.
    assert result.layers[1].isolated_rel_diff > 1e-4 and result.layers[2].isolated_rel_diff < 1e-5
    assert not result.ok and not result.drifting
    assert result.layers[1].torch_params == result.layers[1].keras_params == 4 * 32

    port.bn.eps = 1e-3  # Keras's epsilon: now it matches
    assert k2t.compare(model, port, mapping=mapping, device="cpu").ok


def test_generated_class_as_plain_module_is_matched_by_name():
    model = small_cnn()
    randomise_weights(model)
    conversion = k2t.convert(model)
    namespace: dict = {}
    exec(compile(conversion.code, "<generated>", "exec"), namespace)
    net = namespace["Net"]()
    net.load_state_dict(conversion.state_dict)
    net.train()
    result = k2t.compare(model, net, device="cpu")
    assert net.training  # the user's module is left as it was
    frame = result.to_dataframe().set_index("keras_layer")
    assert result.ok, frame
    assert frame.loc["flatten", "status"] == "skip"  # no submodule: nothing to hook
    assert frame.loc["conv2d", "status"] == frame.loc["dense", "status"] == "ok"
    assert result.info.input_format == "channels_first"


def test_guide_example2_verbatim_cannot_run_on_nhwc_input():
    """The guide's x.view after x.permute(0, 3, 1, 2) raises: conv keeps the channels-last strides."""
    model = guide_sequential()
    port = PyTorchModel()
    _copy_conv(model.layers[0], port.conv1)
    _copy_conv(model.layers[2], port.conv2)
    result = k2t.compare(model, port, mapping=GUIDE_MAPPING, device="cpu")
    assert result.info.input_format == "channels_last"  # NCHW failed at once; NHWC got further
    assert "view size is not compatible" in result.error
    assert "max_pooling2d_1" in result.error  # where it stopped
    assert [layer.status(1e-4) for layer in result.layers[:4]] == ["ok"] * 4
    assert not result.ok


def test_mapping_options_layout_transform_and_errors():
    model = guide_sequential()
    port = ChannelsFirstPort()
    _copy_conv(model.layers[0], port.conv1)
    result = k2t.compare(
        model,
        port,
        mapping={
            "conv2d": {"module": "conv1", "layout": "channels_first", "transform": F.relu},
            "max_pooling2d": ("pool1", lambda t: t),
        },
        device="cpu",
        input_format="channels_first",
    )
    assert [layer.status(1e-4) for layer in result.layers[:2]] == ["ok", "ok"]
    assert result.layers[-1].compared  # the model output is always compared
    with pytest.raises(ValueError, match="unknown Keras layer"):
        k2t.compare(model, port, mapping={"nope": "conv1"})
    with pytest.raises(ValueError, match="no submodule"):
        k2t.compare(model, port, mapping={"conv2d": "conv9"})


def test_forward_error_is_reported_with_what_was_compared():
    model = guide_sequential()

    class Broken(PyTorchModel):
        def forward(self, x):
            x = self.pool1(F.relu(self.conv1(x)))
            x = self.pool2(F.relu(self.conv2(x)))
            return self.fc(x.view(-1, 64 * 13 * 13))  # wrong size: the view raises

    port = Broken()
    _copy_conv(model.layers[0], port.conv1)
    result = k2t.compare(model, port, mapping=GUIDE_MAPPING, device="cpu")
    assert result.error and "RuntimeError" in result.error
    assert not result.ok
    assert result.layers[0].status(1e-4) == "ok"
    assert result.layers[-1].status(1e-4) == "skip" or not result.layers[-1].compared
    assert "failed" in result.summary()


def test_shape_mismatch_is_a_failure():
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, name="head")])

    class Wrong(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = nn.Linear(8, 5)

        def forward(self, x):
            return self.head(x)

    result = k2t.compare(model, Wrong(), device="cpu")
    assert result.layers[0].status(1e-4) == "fail"
    assert "shape mismatch" in result.layers[0].note
    assert result.to_dataframe()["status"].tolist() == ["fail"]


def test_bad_arguments():
    model = residual_model()
    conversion = k2t.convert(model)
    with pytest.raises(TypeError, match="Conversion"):
        k2t.compare(model, object())
    with pytest.raises(ValueError, match="mapping is for your own"):
        k2t.compare(model, conversion, mapping={"head": "head"})


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_comparison_runs_on_cuda():
    model = small_cnn()
    randomise_weights(model)
    result = k2t.compare(model, k2t.convert(model))
    assert result.info.torch_device.startswith("cuda")
    assert result.ok, result.to_dataframe()


# --------------------------------------------------------------------------------------------------
# one source of truth: converter names, activations
# --------------------------------------------------------------------------------------------------
def test_rows_name_their_converter():
    model = small_cnn()
    frame = k2t.compare(model, k2t.convert(model), device="cpu").to_dataframe()
    converters = dict(zip(frame["keras_class"], frame["converter"]))
    assert converters["Conv2D"] == "converters.conv.convert_conv"
    assert converters["Dense"] == "converters.core.convert_dense"
    assert converters["BatchNormalization"].startswith("converters.normalization.")
    own = k2t.compare(model, PyTorchModelBN(), mapping={"conv2d": "conv"}, device="cpu").to_dataframe()
    assert set(own["converter"]) == {""}  # a hand port: no converter wrote it


def test_fused_activations_come_from_the_converters_table():
    """compare applies exactly the activations convert writes: every template, checked against Keras."""
    from kerastorch_magic.compare.mapping import torch_activations
    from kerastorch_magic.converters import activations

    table = torch_activations()
    expected = {name for name, entry in activations._ACTIVATIONS.items() if entry.helper is None}
    assert set(table) == expected
    assert {"celu", "soft_shrink", "hard_tanh", "log_sigmoid"} <= set(table)  # the old copy lacked these
    x = np.random.default_rng(0).normal(scale=3.0, size=(4, 6)).astype("float32")
    for name, function in table.items():
        want = keras.ops.convert_to_numpy(keras.activations.get(name)(x))
        got = x if function is None else function(torch.from_numpy(x)).numpy()
        assert np.allclose(got, want, rtol=1e-5, atol=1e-6), name


# --------------------------------------------------------------------------------------------------
# recurrent layers: sequences and states
# --------------------------------------------------------------------------------------------------
def recurrent_model():
    """An LSTM returning its sequence and both states, and a Bidirectional LSTM returning its four."""
    inputs = keras.Input((7, 3), name="tokens")
    sequence, state_h, state_c = keras.layers.LSTM(5, return_sequences=True, return_state=True, name="lstm")(
        inputs
    )
    both = keras.layers.Bidirectional(
        keras.layers.LSTM(4, return_sequences=True, return_state=True), name="bi"
    )(sequence)
    head = keras.layers.Dense(2, name="head")(both[0])
    return keras.Model(inputs, [head, state_h, state_c, *both[1:]], name="recurrent")


@pytest.mark.parametrize("fmt", ["channels_first", "channels_last"])
def test_recurrent_sequences_and_states_are_rows_like_any_other(fmt):
    model = recurrent_model()
    randomise_weights(model)
    result = k2t.compare(model, k2t.convert(model, input_format=fmt), device="cpu", progress=False)
    assert result.ok, result.to_dataframe()
    rows = [(layer.keras_layer, layer.output) for layer in result.layers]
    assert rows == [
        ("lstm", "sequence"),
        ("lstm", "state h"),
        ("lstm", "state c"),
        ("bi", "sequence"),
        ("bi", "forward state h"),
        ("bi", "forward state c"),
        ("bi", "backward state h"),
        ("bi", "backward state c"),
        ("head", ""),
    ]
    assert all(layer.compared and layer.rel_diff <= 1e-5 for layer in result.layers)
    frame = result.to_dataframe()
    assert list(frame["output"][:3]) == ["sequence", "state h", "state c"]
    assert frame["keras_shape"].tolist()[:4] == [(2, 7, 5), (2, 5), (2, 5), (2, 7, 8)]
    assert result.layers[0].torch_module == "lstm" and result.layers[3].torch_module == "bi"
    # torch's zero second bias (bias_hh) is not counted against Keras's one bias: no false mismatch.
    for layer in (result.layers[0], result.layers[3]):
        assert layer.torch_params == layer.keras_params == model.get_layer(layer.keras_layer).count_params()
        assert "bias_hh" in layer.note
    sequence = result.layers[3].preview  # (2, 7, 8): a (features x time) map, every value shown
    assert sequence.kind == "image" and sequence.keras.shape == (1, 8, 7)
    assert "8 features over 7 steps" in sequence.label
    assert result.layers[1].preview.kind == "lines"  # a state: one vector per sample


# --------------------------------------------------------------------------------------------------
# traced layers: custom layers, subclassed models, random at inference
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["channels_first", "channels_last"])
def test_a_traced_custom_layer_is_one_row_mapped_to_its_submodule(fmt):
    from test_tracing import SqueezeExcite

    inputs = keras.Input((6, 6, 4))
    x = keras.layers.Conv2D(4, 3, padding="same", name="stem")(inputs)
    x = SqueezeExcite(4, name="excite")(x)
    x = keras.layers.Lambda(lambda t: t * 2.0 + 1.0, name="shift")(x)
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1, name="head")(x))
    randomise_weights(model)
    conversion = k2t.convert(model, input_format=fmt)
    result = k2t.compare(model, conversion, device="cpu", progress=False)
    assert result.ok, result.to_dataframe()
    frame = result.to_dataframe().set_index("keras_layer")
    assert list(frame.index) == ["stem", "excite", "shift", "head"]  # no rows inside a call()
    assert frame.loc["excite", "keras_class"] == "SqueezeExcite"
    assert (
        frame.loc["excite", "torch_module"] == "excite" and "self.excite = SqueezeExcite()" in conversion.code
    )
    assert frame.loc["excite", "torch_params"] == frame.loc["excite", "keras_params"] == 4 * 2 + 2 + 2 * 4 + 4
    assert frame.loc["shift", "keras_class"] == "Lambda" and frame.loc["shift", "torch_module"] == "shift"
    assert (frame["rel_diff"] <= 1e-5).all()
    isolated = k2t.compare(model, conversion, device="cpu", progress=False, isolate=True)
    assert isolated.ok and all(layer.rel_diff <= 1e-5 for layer in isolated.layers)


def test_a_subclassed_model_rows_use_its_attribute_names():
    from test_subclassed import SmallCNN

    model = SmallCNN()
    model.build((None, 8, 8, 2))
    images = np.random.default_rng(0).normal(size=(2, 8, 8, 2)).astype("float32")
    randomise_weights(model, inputs=[images])
    result = k2t.compare(model, k2t.convert(model), inputs=images, device="cpu", progress=False)
    assert result.ok, result.to_dataframe()
    modules = {layer.keras_class: layer.torch_module for layer in result.layers}
    assert modules["Conv2D"] == "conv" and modules["SqueezeExcite"] == "excite"
    assert modules["Dense"] == "classifier"
    assert all(layer.rel_diff <= 1e-5 for layer in result.compared)


def vae_decoder_model():
    """The keras-io VAE's sampling between an encoder and a decoder."""
    from test_tracing import Sampling

    inputs = keras.Input((6,), name="features")
    hidden = keras.layers.Dense(8, activation="relu", name="encoder")(inputs)
    z_mean = keras.layers.Dense(3, name="z_mean")(hidden)
    z_log_var = keras.layers.Dense(3, name="z_log_var")(hidden)
    z = Sampling(name="sampling")([z_mean, z_log_var])
    decoded = keras.layers.Dense(6, activation="sigmoid", name="decoder")(z)
    return keras.Model(inputs, keras.layers.Dense(4, name="head")(decoded), name="vae")


@pytest.mark.parametrize("isolate", [False, True])
def test_random_at_inference_is_marked_and_the_next_layers_get_keras_draw(isolate):
    model = vae_decoder_model()
    randomise_weights(model)
    result = k2t.compare(model, k2t.convert(model), device="cpu", progress=False, isolate=isolate)
    statuses = dict(zip((layer.keras_layer for layer in result.layers), result.statuses()))
    assert statuses.pop("sampling") == "random"
    assert set(statuses.values()) == {"ok"}, result.to_dataframe()
    sampling = next(layer for layer in result.layers if layer.keras_layer == "sampling")
    assert sampling.random and sampling.rel_diff > 1e-2  # different draws, not compared by value
    assert "random at inference" in sampling.note
    after = [layer for layer in result.layers if layer.keras_layer in ("decoder", "head")]
    assert all(layer.rel_diff <= 1e-6 for layer in after)  # fed Keras's draw: exact again
    assert result.ok and result.max_rel_diff <= 1e-6
    assert "random at inference: 'sampling'" in result.summary()
    assert result.to_dataframe().loc[sampling.index, "status"] == "random"


def test_random_rows_in_a_module_compared_through_hooks():
    model = vae_decoder_model()
    randomise_weights(model)
    net = k2t.convert(model).build()  # a plain nn.Module: matched by name, read through hooks
    result = k2t.compare(model, net, device="cpu", progress=False)
    assert result.ok, result.to_dataframe()
    assert [layer.keras_layer for layer in result.layers if layer.status(1e-4) == "random"] == ["sampling"]
    head = result.layers[-1]
    assert head.keras_layer == "head" and head.rel_diff <= 1e-6
