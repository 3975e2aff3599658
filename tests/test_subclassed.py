"""Subclassed models, traced once built: the main class keeps the user's attribute names."""

import keras
import numpy as np
import pytest
from exactness import assert_exact
from keras import layers
from test_tracing import PositionalEmbedding, Residual, SqueezeExcite, assert_trainable_like_keras

import kerastorch_magic as k2t

FORMATS = ["channels_first", "channels_last"]


class SmallCNN(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = layers.Conv2D(4, 3, activation="relu")
        self.excite = SqueezeExcite(4)
        self.pool = layers.GlobalAveragePooling2D()
        self.dropout = layers.Dropout(0.2)
        self.classifier = layers.Dense(3, activation="softmax")

    def call(self, images, training=False):
        x = self.excite(self.conv(images))
        return self.classifier(self.dropout(self.pool(x), training=training))


class TwoTowers(keras.Model):
    """Several inputs (a list), a nested custom layer used twice, two outputs."""

    def __init__(self):
        super().__init__()
        self.left = layers.Dense(5)
        self.right = layers.Dense(5)
        self.blocks = [Residual(5), Residual(5)]

    def call(self, inputs):
        first, second = inputs
        merged = self.left(first) * self.right(second)
        return self.blocks[1](self.blocks[0](merged)), merged


@pytest.mark.parametrize("fmt", FORMATS)
def test_subclassed_cnn_built_with_build(fmt):
    model = SmallCNN()
    model.build((None, 8, 8, 2))
    conversion, _ = assert_exact(
        model, fmt, inputs=[np.random.default_rng(0).normal(size=(2, 8, 8, 2)).astype("float32")]
    )
    code = conversion.code
    assert "class Net(nn.Module):" in code and "class SqueezeExcite(nn.Module):" in code
    assert "self.conv = nn.Conv2d(2, 4, kernel_size=3)" in code
    assert "self.excite = SqueezeExcite()" in code
    assert "self.classifier = nn.Linear(4, 3)" in code
    assert "def forward(self, images):" in code
    assert_trainable_like_keras_subclassed(model, conversion, [(2, 8, 8, 2)])


@pytest.mark.parametrize("fmt", FORMATS)
def test_subclassed_model_with_several_inputs_and_outputs(fmt):
    model = TwoTowers()
    rng = np.random.default_rng(1)
    inputs = [rng.normal(size=(2, 4)).astype("float32"), rng.normal(size=(2, 3)).astype("float32")]
    model(inputs)  # built by a call on data
    conversion, _ = assert_exact(model, fmt, inputs=inputs)
    code = conversion.code
    assert "self.blocks_0 = Residual()" in code and "self.blocks_1 = Residual()" in code
    assert "def forward(self, first, second):" in code  # named as call() unpacks its list
    assert code.count("class Residual(nn.Module):") == 1
    assert len(conversion.outputs) == 2
    assert_trainable_like_keras_subclassed(model, conversion, [(2, 4), (2, 3)])


def assert_trainable_like_keras_subclassed(model, conversion, shapes):
    # random_inputs reads model.inputs, which a subclassed model lacks: give it the shapes.
    model.inputs = [keras.KerasTensor((None, *shape[1:])) for shape in shapes]
    try:
        assert_trainable_like_keras(model, conversion)
    finally:
        del model.inputs


def test_unbuilt_subclassed_model_says_how_to_build_it():
    with pytest.raises(k2t.ConversionError, match=r"model\.build\(\(None, 28, 28, 1\)\)") as error:
        k2t.convert(SmallCNN(name="cnn"))
    assert error.value.layers == [("cnn", "SmallCNN")]


@pytest.mark.parametrize(
    ("model_class", "shape", "says"),
    [
        (SmallCNN, None, "no input shape"),  # keras-io's GANs, NNCLR, diffusion models
        (TwoTowers, [(None, 4), None], "no shape for one of its inputs"),
    ],
)
def test_subclassed_model_built_without_a_shape_says_how_to_build_it(model_class, shape, says):
    model = model_class()
    model.build(shape)  # Keras records {"input_shape": shape}: nothing to trace with
    with pytest.raises(k2t.ConversionError, match=rf"{says}.*model\.build\(\(None, 28, 28, 1\)\)"):
        k2t.convert(model)


def test_python_control_flow_on_tensors_is_refused_with_the_line():
    class Branchy(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.dense = layers.Dense(3)

        def call(self, x):
            if keras.ops.sum(x) > 0:  # fine eagerly, impossible to trace
                return self.dense(x)
            return -x

    model = Branchy(name="branchy")
    model.build((None, 3))
    with pytest.raises(k2t.ConversionError) as error:
        k2t.convert(model)
    message = str(error.value)
    assert "'branchy' (Branchy)" in message
    assert "Python control flow on a tensor value" in message
    assert "test_subclassed.py:" in message and "if keras.ops.sum(x) > 0:" in message


class TemperatureScaled(keras.Model):
    """A weight of the model itself (add_weight on the Model), read in call()."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.logits = layers.Dense(4)
        self.temperature = self.add_weight(shape=(), initializer="ones", name="temperature")

    def call(self, x):
        return keras.ops.softmax(self.logits(x) / self.temperature, axis=-1)


@pytest.mark.parametrize("fmt", FORMATS)
def test_subclassed_model_with_its_own_weight(fmt):
    model = TemperatureScaled()
    model.build((None, 5))
    inputs = [np.random.default_rng(2).normal(size=(2, 5)).astype("float32")]
    conversion, _ = assert_exact(model, fmt, inputs=inputs)
    assert "self.temperature = nn.Parameter(torch.empty(()))" in conversion.code
    assert "nn.init.ones_(self.temperature)" in conversion.code
    assert_trainable_like_keras_subclassed(model, conversion, [(2, 5)])


class TextClassifier(keras.Model):
    """A subclassed text model built by a call on token ids."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.embedding = PositionalEmbedding(6, 30, 8)
        self.pool = layers.GlobalAveragePooling1D()
        self.head = layers.Dense(2)

    def call(self, tokens):
        return self.head(self.pool(self.embedding(tokens)))


@pytest.mark.parametrize("fmt", FORMATS)
def test_subclassed_text_model_takes_token_ids(fmt):
    tokens = np.random.default_rng(3).integers(0, 30, (2, 6)).astype("int32")
    model = TextClassifier()
    model(tokens)
    conversion, _ = assert_exact(model, fmt, inputs=[tokens])
    assert conversion.inputs[0].dtype == "int32"
    assert ".long()" not in conversion.code  # ids go to nn.Embedding as they are


class FreshConcatenate(keras.Model):
    """keras-io's semantic image clustering: call() makes a Concatenate layer each time it runs."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = layers.Dense(3)

    def call(self, x):
        return self.dense(layers.Concatenate(axis=0)([x, 2.0 * x]))


def test_compare_accepts_a_layer_that_call_creates_anew():
    model = FreshConcatenate()
    model.build((None, 4))
    conversion = k2t.convert(model)  # compare traces call() again: a new Concatenate
    comparison = k2t.compare(model, conversion)
    assert comparison.ok, comparison
