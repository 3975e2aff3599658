"""Raw ``tf.*`` calls in a traced ``call()`` that run as their keras.ops twin: exact against Keras.

keras-io examples written for Keras 2 call TensorFlow on tensors inside ``call()``; the ones below
come verbatim from them (DDPM's ``TimeEmbedding``, the ``StandardizedConv2DWithCall`` recipe).
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from exactness import assert_exact

import kerastorch_magic as k2t

FORMATS = ["channels_first", "channels_last"]


class TimeEmbedding(keras.layers.Layer):
    """keras-io generative/ddpm.py, verbatim."""

    def __init__(self, dim, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim
        self.half_dim = dim // 2
        self.emb = math.log(10000) / (self.half_dim - 1)
        self.emb = tf.exp(tf.range(self.half_dim, dtype=tf.float32) * -self.emb)

    def call(self, inputs):
        inputs = tf.cast(inputs, dtype=tf.float32)
        emb = inputs[:, None] * self.emb[None, :]
        emb = tf.concat([tf.sin(emb), tf.cos(emb)], axis=-1)
        return emb


class StandardizedConv2DWithCall(keras.layers.Conv2D):
    """keras-io keras_recipes/subclassing_conv_layers.py, verbatim: weight standardisation."""

    def call(self, inputs):
        mean, var = tf.nn.moments(self.kernel, axes=[0, 1, 2], keepdims=True)
        result = self.convolution_op(inputs, (self.kernel - mean) / tf.sqrt(var + 1e-10))
        if self.use_bias:
            result = result + self.bias
        return result


class ManyTwins(keras.layers.Layer):
    """The element-wise, comparison, gather and activation twins in one call()."""

    def build(self, input_shape):
        self.table = self.add_weight(shape=(7, input_shape[-1]), initializer="random_normal", name="table")

    def call(self, x):
        y = tf.math.pow(tf.abs(x) + 1.0, 0.5) - tf.math.rsqrt(tf.abs(x) + 2.0)
        y = tf.divide(tf.subtract(y, tf.math.log(tf.abs(x) + 1.0)), 3.0)
        y = tf.clip_by_value(y, -0.5, 0.5) + tf.nn.leaky_relu(x) + tf.nn.relu6(x) + tf.nn.elu(x)
        y = tf.where(tf.math.not_equal(tf.sign(x), 1.0), y, tf.nn.softplus(x))
        y = y + tf.zeros_like(x) + tf.ones_like(x) * tf.math.minimum(x, 0.1)
        tokens = tf.cast(tf.clip_by_value(tf.abs(x[:, :3]) * 3.0, 0.0, 6.0), "int32")
        looked_up = tf.reduce_sum(tf.gather(self.table, tokens), axis=1)
        hot = tf.reduce_sum(tf.one_hot(tokens, 4), axis=1)
        return tf.concat([y + looked_up, tf.tile(hot, [1, 2])], axis=-1)


def test_ddpm_time_embedding():
    steps = keras.Input((), dtype="int32")
    outputs = keras.layers.Dense(8)(TimeEmbedding(16)(steps))
    model = keras.Model(steps, outputs)
    t = np.random.default_rng(0).integers(0, 1000, size=(3,)).astype("int32")
    conversion, _ = assert_exact(model, inputs=[t])
    assert "torch.sin(" in conversion.code and "torch.cos(" in conversion.code


@pytest.mark.parametrize("fmt", FORMATS)
def test_weight_standardised_convolution(fmt):
    inputs = keras.Input((9, 9, 3))
    outputs = StandardizedConv2DWithCall(4, 3, padding="same")(inputs)
    conversion, _ = assert_exact(keras.Model(inputs, outputs), fmt)
    assert (
        "correction=0" in conversion.code
    )  # TF's moments: the biased variance, as torch's var(correction=0)
    assert "F.conv2d(" in conversion.code


def test_many_twins_in_one_call():
    inputs = keras.Input((6,))
    outputs = ManyTwins()(keras.layers.Dense(6)(inputs))
    assert_exact(keras.Model(inputs, outputs))


def test_an_option_without_a_twin_is_still_refused_by_name():
    class Gathered(keras.layers.Layer):
        def call(self, x):
            return tf.gather(x, tf.zeros_like(x, "int32"), batch_dims=1)

    inputs = keras.Input((4,))
    with pytest.raises(k2t.ConversionError, match="raw TensorFlow call") as info:
        k2t.convert(keras.Model(inputs, Gathered(name="gathered")(inputs)))
    assert "tf.gather(x, tf.zeros_like" in str(info.value)  # the user's line


class Involution(keras.layers.Layer):
    """keras-io vision/involution.py, shortened: ``tf.identity`` kept in an attribute at __init__."""

    def __init__(self, channel, kernel_size, stride, **kwargs):
        super().__init__(**kwargs)
        self.channel, self.kernel_size, self.stride = channel, kernel_size, stride

    def build(self, input_shape):
        (_, height, width, num_channels) = input_shape
        height, width = height // self.stride, width // self.stride
        self.stride_layer = (
            keras.layers.AveragePooling2D(pool_size=self.stride, strides=self.stride, padding="same")
            if self.stride > 1
            else tf.identity
        )
        self.kernel_gen = keras.layers.Conv2D(self.kernel_size * self.kernel_size, 1)
        self.kernel_reshape = keras.layers.Reshape((height, width, self.kernel_size * self.kernel_size, 1))
        self.input_patches_reshape = keras.layers.Reshape(
            (height, width, self.kernel_size * self.kernel_size, num_channels)
        )
        self.output_reshape = keras.layers.Reshape((height, width, num_channels))

    def call(self, x):
        kernel = self.kernel_reshape(self.kernel_gen(self.stride_layer(x)))
        input_patches = tf.image.extract_patches(
            images=x,
            sizes=[1, self.kernel_size, self.kernel_size, 1],
            strides=[1, self.stride, self.stride, 1],
            rates=[1, 1, 1, 1],
            padding="SAME",
        )
        input_patches = self.input_patches_reshape(input_patches)
        output = tf.reduce_sum(tf.multiply(kernel, input_patches), axis=3)
        return self.output_reshape(output)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_tf_function_kept_in_an_attribute_runs_as_its_twin(fmt):
    inputs = keras.Input((8, 8, 3))
    outputs = Involution(3, 3, 1, name="involution")(inputs)
    model = keras.Model(inputs, outputs)
    assert_exact(model, fmt)
    assert model.layers[1].stride_layer is tf.identity  # put back after tracing


class StandardizedConv2DWithOverride(keras.layers.Conv2D):
    """keras-io keras_recipes/subclassing_conv_layers.py, verbatim: convolution_op overridden."""

    def convolution_op(self, inputs, kernel):
        mean, var = tf.nn.moments(kernel, axes=[0, 1, 2], keepdims=True)
        return tf.nn.conv2d(
            inputs,
            (kernel - mean) / tf.sqrt(var + 1e-10),
            padding="VALID",
            strides=list(self.strides),
            name=self.__class__.__name__,
        )


class ShiftedImages(keras.layers.Layer):
    """vit_small_ds.py's ShiftedPatchTokenization shifts: crop, then pad back, per direction."""

    def call(self, images):
        shifted = [images]
        for top, left in ((0, 0), (2, 0), (0, 2), (2, 2)):
            crop = tf.image.crop_to_bounding_box(images, top, left, 6, 7)
            shifted.append(tf.image.pad_to_bounding_box(crop, 2 - top, 1 + left // 2, 8, 9))
        return tf.concat(shifted, axis=-1)


@pytest.mark.parametrize("fmt", FORMATS)
def test_convolution_op_override_and_image_crops_and_pads(fmt):
    inputs = keras.Input((8, 9, 3))
    shifted = ShiftedImages()(inputs)
    outputs = StandardizedConv2DWithOverride(4, 3, strides=2)(shifted)
    assert_exact(keras.Model(inputs, outputs), fmt)


# keras-io timeseries/timeseries_traffic_forecasting.py's GraphConv aggregates neighbours with
# tf.math.unsorted_segment_{sum,mean,max} over a Python list of edges; segment 5 below has no edge.
EDGE_TARGETS = [0, 0, 1, 3, 3, 3, 2, 1, 4]
EDGE_SOURCES = [1, 2, 0, 4, 5, 0, 3, 5, 2]


class GraphAggregation(keras.layers.Layer):
    def __init__(self, how, **kwargs):
        super().__init__(**kwargs)
        self.how = how
        self.weight = self.add_weight(shape=(3, 4), initializer="glorot_uniform")

    def call(self, features):  # (nodes, batch, features)
        messages = tf.gather(features, EDGE_SOURCES)
        reduce = getattr(tf.math, f"unsorted_segment_{self.how}")
        aggregated = reduce(messages, EDGE_TARGETS, num_segments=6)
        if self.how in ("max", "min"):  # an empty segment holds the lowest/highest float: keep finite
            aggregated = tf.clip_by_value(aggregated, -10.0, 10.0)
        return tf.matmul(aggregated, self.weight)


@pytest.mark.parametrize("how", ["sum", "mean", "max", "min"])
def test_unsorted_segment_reductions_of_a_graph_layer(how):
    inputs = keras.Input((6, 3))  # (batch, nodes, features)
    nodes_first = keras.ops.transpose(inputs, (1, 0, 2))
    outputs = keras.ops.transpose(GraphAggregation(how)(nodes_first), (1, 0, 2))
    model = keras.Model(inputs, outputs)
    conversion, _ = assert_exact(model, "channels_last")
    torch_call = ".index_add_(" if how in ("sum", "mean") else ".scatter_reduce_("
    assert torch_call in conversion.code
    assert ".long()" not in conversion.code  # int64 ids already


def test_segment_sum_needs_its_number_of_segments():
    class Unsized(keras.layers.Layer):
        def call(self, x):
            return keras.ops.segment_sum(x, np.array([0, 1, 1]))

    inputs = keras.Input((4,), batch_size=3)
    model = keras.Model(inputs, Unsized()(inputs))
    with pytest.raises(k2t.ConversionError, match="num_segments=None sizes the output by the largest id"):
        k2t.convert(model)


class PixelAttention(keras.layers.Layer):
    """Attention over all pixels written as keras-io's DDPM writes it: TensorFlow einsum subscripts
    in both cases and with a space, which Keras's own symbolic einsum cannot parse."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.query, self.key, self.value = (keras.layers.Dense(units) for _ in range(3))

    def call(self, x):
        batch, height, width = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
        q, k, v = self.query(x), self.key(x), self.value(x)
        scores = tf.einsum("bhwc, bHWc->bhwHW", q, k) * self.units**-0.5
        scores = tf.reshape(scores, [batch, height, width, height * width])
        scores = tf.reshape(tf.nn.softmax(scores, -1), [batch, height, width, height, width])
        return x + tf.einsum("bhwHW,bHWc->bhwc", scores, v)


@pytest.mark.parametrize("fmt", FORMATS)
def test_einsum_with_upper_case_subscripts(fmt):
    inputs = keras.Input((4, 5, 8))
    model = keras.Model(inputs, PixelAttention(8)(inputs))
    conversion, _ = assert_exact(model, fmt)
    assert conversion.code.count("torch.einsum(") == 2
