"""Custom layers and Lambda layers, traced: exact, one class per custom class, weights trainable."""

import keras
import numpy as np
import pytest
import torch
from exactness import assert_exact, random_inputs
from keras import layers, ops

import kerastorch_magic as k2t

FORMATS = ["channels_first", "channels_last"]


def assert_trainable_like_keras(model, conversion):
    """Same parameter count as Keras, and a backward pass reaches every parameter."""
    module = conversion.build()
    keras_params = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    torch_params = sum(p.numel() for p in module.parameters() if p.requires_grad)
    assert torch_params == keras_params
    module.train()
    inputs = [
        torch.from_numpy(np.ascontiguousarray(spec.to_torch_layout(a)))
        for spec, a in zip(conversion.inputs, random_inputs(model))
    ]
    outputs = module(*inputs)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    sum(o.float().square().sum() for o in outputs).backward()
    missing = [name for name, p in module.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient reaches {missing}"
    return module


# -- layers used below ------------------------------------------------------------------------------
class Residual(layers.Layer):
    """Inner layers kept under the user's attribute names, a keras.ops add."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.dense_proj = layers.Dense(units, activation="relu")
        self.dense_out = layers.Dense(units)

    def call(self, x):
        return self.dense_out(self.dense_proj(x)) + x


class Scale(layers.Layer):
    """Weights of its own (add_weight): a trainable one and a non-trainable one."""

    def build(self, input_shape):
        self.gamma = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="gamma")
        self.offset = self.add_weight(shape=(input_shape[-1],), initializer="zeros", trainable=False)

    def call(self, x):
        return x * self.gamma + self.offset


class PositionalEmbedding(layers.Layer):
    """keras-io's token + position embedding: the positions come from ops.arange on a shape."""

    def __init__(self, sequence_length, vocab_size, dim, **kwargs):
        super().__init__(**kwargs)
        self.token_embeddings = layers.Embedding(vocab_size, dim)
        self.position_embeddings = layers.Embedding(sequence_length, dim)

    def call(self, inputs):
        length = ops.shape(inputs)[-1]
        positions = ops.arange(0, length, 1)
        return self.token_embeddings(inputs) + self.position_embeddings(positions)


class Noisy(layers.Layer):
    """A training branch: dropout only while training."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = layers.Dense(4)
        self.dropout = layers.Dropout(0.5)

    def call(self, x, training=None):
        return self.dropout(self.dense(x), training=training)


class TwoBranches(layers.Layer):
    """Nested custom layers: two instances of one custom class inside another custom class."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.left = Noisy()
        self.right = Noisy()

    def call(self, x, training=None):
        return self.left(x, training=training) - self.right(x)


class SqueezeExcite(layers.Layer):
    """Channel attention on images: convolutions inside (channels-first in torch)."""

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.pool = layers.GlobalAveragePooling2D(keepdims=True)
        self.reduce = layers.Conv2D(channels // 2, 1, activation="relu")
        self.expand = layers.Conv2D(channels, 1, activation="sigmoid")

    def call(self, x):
        return x * self.expand(self.reduce(self.pool(x)))


# -- tests ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_custom_layers_become_classes_with_user_attribute_names(fmt):
    inputs = keras.Input((6,))
    x = Residual(6)(inputs)
    x = Residual(6)(x)
    model = keras.Model(inputs, Scale()(x))
    conversion, error = assert_exact(model, fmt)
    code = conversion.code
    assert code.count("class Residual(nn.Module):") == 1  # one class, two instances
    assert "self.residual = Residual()" in code and "self.residual_1 = Residual()" in code
    assert "self.dense_proj = nn.Linear(6, 6)" in code and "self.dense_out = nn.Linear(6, 6)" in code
    assert "self.gamma = nn.Parameter(torch.empty(6))" in code
    assert "self.offset = nn.Buffer(torch.empty(6))" in code
    assert "nn.init.ones_(self.gamma)" in code  # the Keras initialiser add_weight got
    assert "residual.dense_proj.weight" in conversion.state_dict
    module = assert_trainable_like_keras(model, conversion)
    np.testing.assert_array_equal(module.scale.gamma.detach().numpy(), model.layers[-1].gamma.numpy())


@pytest.mark.parametrize("fmt", FORMATS)
def test_positional_embedding_on_arange_stays_trainable(fmt):
    inputs = keras.Input((7,), dtype="int32")
    model = keras.Model(inputs, PositionalEmbedding(7, 12, 4)(inputs))
    conversion, _ = assert_exact(model, fmt)
    assert "self.position_embeddings = nn.Embedding(7, 4)" in conversion.code
    assert "torch.arange(7, device=" in conversion.code
    assert_trainable_like_keras(model, conversion)


@pytest.mark.parametrize("fmt", FORMATS)
def test_nested_custom_layers_and_training_branches(fmt):
    inputs = keras.Input((6,))
    model = keras.Model(inputs, TwoBranches()(inputs))
    conversion, _ = assert_exact(model, fmt)
    code = conversion.code
    assert code.index("class Noisy(nn.Module):") < code.index("class TwoBranches(nn.Module):")
    assert "self.left = Noisy()" in code and "self.right = Noisy()" in code
    assert "nn.Dropout(p=0.5)" in code  # active under module.train(), as Keras's training=True
    assert_trainable_like_keras(model, conversion)


@pytest.mark.parametrize("fmt", FORMATS)
def test_shared_custom_layer_is_one_instance(fmt):
    inputs = keras.Input((6,))
    shared = Residual(6, name="shared")
    model = keras.Model(inputs, shared(shared(inputs)))
    conversion, _ = assert_exact(model, fmt)
    assert conversion.code.count("self.shared = Residual()") == 1
    assert conversion.code.count("self.shared(") == 2
    assert_trainable_like_keras(model, conversion)


@pytest.mark.parametrize("fmt", FORMATS)
def test_squeeze_excite_between_convolutions(fmt):
    inputs = keras.Input((8, 8, 4))
    x = layers.Conv2D(4, 3, padding="same")(inputs)
    x = SqueezeExcite(4)(x)
    model = keras.Model(inputs, layers.Conv2D(2, 1)(x))
    conversion, _ = assert_exact(model, fmt)
    assert "self.reduce = nn.Conv2d(4, 2, kernel_size=1)" in conversion.code
    assert_trainable_like_keras(model, conversion)


@pytest.mark.parametrize("fmt", FORMATS)
def test_uses_of_one_class_with_other_sizes_get_distinct_classes(fmt):
    inputs = keras.Input((6,))
    x = Residual(6)(inputs)
    x = layers.Dense(3)(x)
    model = keras.Model(inputs, Residual(3)(x))
    conversion, _ = assert_exact(model, fmt)
    assert "class Residual(nn.Module):" in conversion.code
    assert "class Residual2(nn.Module):" in conversion.code
    assert "self.residual_1 = Residual2()" in conversion.code


def test_one_comparison_row_per_custom_layer_call():
    inputs = keras.Input((6,))
    x = Residual(6, name="block")(inputs)
    model = keras.Model(inputs, layers.Dense(2, name="head")(x))
    conversion, _ = assert_exact(model)
    assert [trace.keras_name for trace in conversion.traces] == ["block", "head"]
    assert conversion.traces[0].modules == ("block",)
    seen = []
    module = conversion.build_traced(lambda index, tensor: seen.append(index))
    module(torch.zeros(2, 6))
    assert seen == [0, 1]


def swish(t):
    return t * ops.sigmoid(t)


@pytest.mark.parametrize("fmt", FORMATS)
def test_lambda_layers_are_traced(fmt):
    inputs = keras.Input((4, 4, 3))
    x = layers.Conv2D(3, 1)(inputs)
    x = layers.Lambda(swish)(x)
    x = layers.Lambda(lambda t: t * 2.0 + 1.0)(x)
    model = keras.Model(inputs, layers.Conv2D(2, 1)(x))
    conversion, _ = assert_exact(model, fmt)
    code = conversion.code
    assert "class Swish(nn.Module):" in code and "self.swish = Swish()" in code
    assert "self.lambda_layer = Lambda()" in code


class Sampling(layers.Layer):
    """The keras-io VAE's sampling layer: random at inference too."""

    def call(self, inputs):
        z_mean, z_log_var = inputs
        epsilon = keras.random.normal(shape=ops.shape(z_mean))
        return z_mean + ops.exp(0.5 * z_log_var) * epsilon


def test_random_at_inference_becomes_a_torch_draw_marked_random():
    z_mean, z_log_var = keras.Input((3,), name="z_mean"), keras.Input((3,), name="z_log_var")
    model = keras.Model([z_mean, z_log_var], Sampling(name="sampling")([z_mean, z_log_var]))
    conversion = k2t.convert(model)
    assert "noise = torch.randn(z_mean.shape[0], 3, device=z_mean.device)" in conversion.code
    assert [trace.random for trace in conversion.traces] == [True]
    # Same distribution: with a zero log-variance the output minus the mean is N(0, 1).
    mean = torch.full((4000, 3), 2.0)
    sample = conversion.build()(mean, torch.zeros(4000, 3)) - mean
    assert abs(float(sample.mean())) < 0.1 and abs(float(sample.std()) - 1.0) < 0.1


class MCDropout(layers.Dropout):
    """handson-ml3's Monte Carlo dropout (chapter 11): dropout at inference too."""

    def call(self, inputs, training=False):
        return super().call(inputs, training=True)


def test_monte_carlo_dropout_becomes_f_dropout_in_training_mode():
    inputs = keras.Input((8,))
    hidden = layers.Dense(16, activation="relu")(inputs)
    # noise_shape: one mask for each row's 4 columns, drawn (N, 1, 4) and broadcast
    shared = MCDropout(0.5, noise_shape=(None, 1, 4), name="mc_shared")(layers.Reshape((4, 4))(hidden))
    model = keras.Model(
        inputs, [layers.Dense(3)(MCDropout(0.25, name="mc_dropout")(hidden)), layers.Flatten()(shared)]
    )
    conversion = k2t.convert(model)
    assert "F.dropout(inputs, p=0.25, training=True)" in conversion.code
    assert "Monte Carlo dropout" in conversion.code
    result = k2t.compare(model, conversion, device="cpu", progress=False)
    assert result.ok, result.to_dataframe()
    assert [layer.keras_layer for layer in result.layers if layer.random] == ["mc_dropout", "mc_shared"]
    assert "torch.rand(inputs.shape[0], 1, 4, device=inputs.device)" in conversion.code
    # Keras's distribution: each unit kept with probability 0.75, scaled by 1 / 0.75.
    net = conversion.build()
    with torch.no_grad():
        dropped = net.mc_dropout(torch.ones(4000, 16))
    assert abs(float((dropped != 0).float().mean()) - 0.75) < 0.02
    assert torch.allclose(dropped[dropped != 0], torch.tensor(1 / 0.75))


class MCAlphaDropout(layers.AlphaDropout):
    """handson-ml3's Monte Carlo alpha dropout (chapter 11): torch's F.alpha_dropout."""

    def call(self, inputs, training=False):
        return super().call(inputs, training=True)


def test_monte_carlo_alpha_dropout_keeps_keras_distribution():
    inputs = keras.Input((16,))
    model = keras.Model(inputs, MCAlphaDropout(0.2, name="mc_alpha")(inputs))
    conversion = k2t.convert(model)
    assert "F.alpha_dropout(inputs, p=0.2, training=True)" in conversion.code  # the same formula
    assert [trace.random for trace in conversion.traces] == [True]
    # AlphaDropout keeps SELU's self-normalisation: N(0, 1) in, mean 0 and variance 1 out.
    sample = conversion.build()(torch.randn(50000, 16))
    assert abs(float(sample.mean())) < 0.02 and abs(float(sample.std()) - 1.0) < 0.02
    expected = np.asarray(model(np.random.default_rng(0).normal(size=(50000, 16)).astype("float32")))
    assert abs(float(expected.std()) - float(sample.std())) < 0.02


def test_raw_tensorflow_call_is_refused_with_the_line():
    import tensorflow as tf

    class DepthToSpace(layers.Layer):
        def call(self, x):
            return tf.nn.depth_to_space(x, 2)

    inputs = keras.Input((4, 4, 8))
    model = keras.Model(inputs, DepthToSpace(name="d2s")(inputs))
    with pytest.raises(k2t.ConversionError) as error:
        k2t.convert(model)
    message = str(error.value)
    assert message.startswith("layer 'd2s' (DepthToSpace): cannot trace its call(): a raw TensorFlow call")
    assert "test_tracing.py:" in message and "tf.nn.depth_to_space(x, 2)" in message
    assert error.value.layers == [("d2s", "DepthToSpace")]


def test_builtin_layer_without_converter_is_not_traced_into_keras_internals():
    from kerastorch_magic import registry

    inputs = keras.Input((6,))
    model = keras.Model(inputs, layers.Dense(2, name="dense")(inputs))
    saved = registry._TABLES[registry.LAYER].pop("Dense")
    try:
        with pytest.raises(k2t.ConversionError, match="built-in Keras layer with no converter") as error:
            k2t.convert(model)
    finally:
        registry._TABLES[registry.LAYER]["Dense"] = saved
    assert "'dense' (Dense)" in str(error.value).splitlines()[0]


class NoConfigRegularizer(keras.regularizers.Regularizer):
    """keras-io PointNet's OrthogonalRegularizer: no get_config(), irrelevant to the forward pass."""

    def __call__(self, x):
        return ops.sum(ops.square(x)) * 1e-3


def test_custom_regularizer_without_get_config_does_not_stop_conversion():
    inputs = keras.Input((5,))
    outputs = layers.Dense(3, kernel_regularizer=NoConfigRegularizer())(inputs)
    assert_exact(keras.Model(inputs, outputs))


class TransformerBlock(layers.Layer):
    """keras-io's text-classification Transformer block: MultiHeadAttention, a nested Sequential."""

    def __init__(self, embed_dim, num_heads, ff_dim, rate=0.1, **kwargs):
        super().__init__(**kwargs)
        self.att = layers.MultiHeadAttention(num_heads=num_heads, key_dim=embed_dim)
        self.ffn = keras.Sequential([layers.Dense(ff_dim, activation="relu"), layers.Dense(embed_dim)])
        self.layernorm1 = layers.LayerNormalization(epsilon=1e-6)
        self.layernorm2 = layers.LayerNormalization(epsilon=1e-6)
        self.dropout1 = layers.Dropout(rate)
        self.dropout2 = layers.Dropout(rate)

    def call(self, inputs, training=False):
        attn_output = self.dropout1(self.att(inputs, inputs), training=training)
        out1 = self.layernorm1(inputs + attn_output)
        ffn_output = self.dropout2(self.ffn(out1), training=training)
        return self.layernorm2(out1 + ffn_output)


class EinsumAttention(layers.Layer):
    """Self-attention written with keras.ops: reshape, slicing, einsum, softmax."""

    def __init__(self, dim, heads, **kwargs):
        super().__init__(**kwargs)
        self.dim, self.heads = dim, heads
        self.qkv = layers.Dense(3 * dim)
        self.proj = layers.Dense(dim)

    def call(self, x):
        batch, length = ops.shape(x)[0], ops.shape(x)[1]  # batch is None while tracing
        qkv = ops.reshape(self.qkv(x), (batch, length, 3, self.heads, self.dim // self.heads))
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        scores = ops.einsum("bqhd,bkhd->bhqk", q, k) / (self.dim // self.heads) ** 0.5
        out = ops.einsum("bhqk,bkhd->bqhd", ops.softmax(scores, axis=-1), v)
        return self.proj(ops.reshape(out, (batch, -1, self.dim)))


@pytest.mark.parametrize("fmt", FORMATS)
def test_transformer_blocks(fmt):
    inputs = keras.Input((6,), dtype="int32")
    x = PositionalEmbedding(6, 20, 8)(inputs)
    x = TransformerBlock(8, 2, 16)(x)
    x = TransformerBlock(8, 2, 16)(x)
    x = EinsumAttention(8, 2)(x)
    x = x * ops.sigmoid(x)  # a keras.ops call between layers of the Functional model
    model = keras.Model(inputs, layers.Dense(3)(layers.GlobalAveragePooling1D()(x)))
    conversion, _ = assert_exact(model, fmt)
    code = conversion.code
    assert code.count("class TransformerBlock(nn.Module):") == 1
    assert "self.att_query = nn.Linear(8, 16)" in code  # the attention layer under its attribute
    assert "self.ffn_dense = nn.Linear(8, 16)" in code  # the nested Sequential under its attribute
    assert 'torch.einsum("bqhd,bkhd->bhqk"' in code
    assert_trainable_like_keras(model, conversion)


class Stem(layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = layers.Conv2D(4, 3, padding="same")

    def call(self, x):
        return self.conv(x)


@pytest.mark.parametrize("fmt", FORMATS)
def test_images_entering_a_custom_layer_that_convolves_are_taken_channels_first(fmt):
    inputs = keras.Input((8, 8, 3))
    x = SqueezeExcite(4)(Stem()(inputs))
    model = keras.Model(inputs, layers.GlobalAveragePooling2D()(x))
    conversion, _ = assert_exact(model, fmt)
    assert conversion.inputs[0].perm == ((0, 3, 1, 2) if fmt == "channels_first" else (0, 1, 2, 3))
    if fmt == "channels_first":
        assert ".permute(" not in conversion.code  # no re-layout inside the custom classes either


def test_keras_own_mask_nodes_are_not_called_keras_ops_calls_of_the_user():
    from kerastorch_magic import registry

    inputs = keras.Input((5,), dtype="int32")
    x = layers.Embedding(10, 4, mask_zero=True)(inputs)
    model = keras.Model(inputs, layers.GRU(3, name="gru")(x))
    table = registry._TABLES[registry.OPERATION]
    saved = table.pop("NotEqual")
    try:
        with pytest.raises(k2t.ConversionError) as error:
            k2t.convert(model)
    finally:
        table["NotEqual"] = saved
    message = str(error.value)
    assert "(NotEqual)" in message.splitlines()[0]
    assert "the mask Keras computes itself for the mask= argument of 'gru' (GRU)" in message
    assert "a keras.ops call inside the model" not in message


class KerasIoTokenAndPositionEmbedding(layers.Layer):
    """keras-io's text_classification_with_transformer, verbatim: Keras 2 style tf.* calls."""

    def __init__(self, maxlen, vocab_size, embed_dim):
        super().__init__()
        self.token_emb = layers.Embedding(input_dim=vocab_size, output_dim=embed_dim)
        self.pos_emb = layers.Embedding(input_dim=maxlen, output_dim=embed_dim)

    def call(self, x):
        import tensorflow as tf

        maxlen = tf.shape(x)[-1]
        positions = tf.range(start=0, limit=maxlen, delta=1)
        positions = self.pos_emb(positions)
        x = self.token_emb(x)
        return x + positions


class TensorFlowOps(layers.Layer):
    """tf.* calls with a keras.ops twin: traced as those."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = layers.Dense(6)

    def call(self, x):
        import tensorflow as tf

        scores = tf.matmul(x, x, transpose_b=True) / 2.0
        x = tf.matmul(tf.nn.softmax(scores, axis=-1), self.dense(x))
        first, second = tf.split(tf.identity(x), [2, 4], axis=-1)
        x = tf.concat([tf.nn.silu(first), tf.math.reduce_sum(second, axis=-1, keepdims=True)], axis=-1)
        return tf.reduce_mean(tf.reshape(x, [-1, 2, 3, 3]), axis=1)


@pytest.mark.parametrize("fmt", FORMATS)
def test_tensorflow_calls_with_a_keras_ops_twin_are_traced(fmt):
    inputs = keras.Input((6,), dtype="int32")
    x = KerasIoTokenAndPositionEmbedding(6, 20, 6)(inputs)
    model = keras.Model(inputs, TensorFlowOps()(x))
    conversion, _ = assert_exact(model, fmt)
    assert "self.pos_emb = nn.Embedding(6, 6)" in conversion.code
    assert_trainable_like_keras(model, conversion)


class TiedOutput(layers.Layer):
    """Weight tying: the output projection reuses the embedding table, read outside the graph."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.embedding = layers.Embedding(10, 4)

    def call(self, ids):
        return ops.matmul(self.embedding(ids), ops.transpose(self.embedding.embeddings))


def test_trainable_weight_read_outside_the_graph_is_refused_not_frozen():
    inputs = keras.Input((3,), dtype="int32")
    model = keras.Model(inputs, TiedOutput(name="tied")(inputs))
    with pytest.raises(k2t.ConversionError, match="freeze it into a constant") as error:
        k2t.convert(model)
    assert "'tied' (TiedOutput)" in str(error.value).splitlines()[0]


class KerasIoSampling(layers.Layer):
    """keras-io's VAE (generative/vae.py) sampling layer, verbatim: tf.shape and tf.random.normal."""

    def call(self, inputs):
        import tensorflow as tf

        z_mean, z_log_var = inputs
        batch = tf.shape(z_mean)[0]
        dim = tf.shape(z_mean)[1]
        epsilon = tf.random.normal(shape=(batch, dim))
        return z_mean + tf.exp(0.5 * z_log_var) * epsilon


def test_tensorflow_random_draw_at_inference_is_a_torch_draw():
    z_mean, z_log_var = keras.Input((2,)), keras.Input((2,))
    model = keras.Model([z_mean, z_log_var], KerasIoSampling()([z_mean, z_log_var]))
    conversion = k2t.convert(model)
    assert "torch.randn(z_mean.shape[0], 2, device=z_mean.device)" in conversion.code
    assert conversion.traces[0].random


class TrainOnly(layers.Layer):
    """A weight only the training branch reads: still a parameter of the port."""

    def build(self, input_shape):
        self.noise_scale = self.add_weight(shape=(), initializer="ones", name="noise_scale")

    def call(self, x, training=None):
        if training:
            return x + self.noise_scale * keras.random.normal(ops.shape(x))
        return x * 2.0


def test_weights_call_does_not_read_at_inference_are_kept():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, TrainOnly()(inputs))
    conversion, _ = assert_exact(model)
    assert "self.noise_scale = nn.Parameter(torch.empty(()))" in conversion.code
    assert "train_only.noise_scale" in conversion.state_dict


class CausalSelfAttention(layers.Layer):
    """keras-io's decoder pattern: a causal mask computed from shapes, passed to MultiHeadAttention."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.attention = layers.MultiHeadAttention(num_heads=2, key_dim=4)

    def call(self, x):
        length = ops.shape(x)[1]
        causal_mask = ops.tril(ops.ones((length, length), dtype="bool"))[None]
        return self.attention(x, x, attention_mask=causal_mask)


@pytest.mark.parametrize("fmt", FORMATS)
def test_attention_mask_computed_from_shapes_reaches_the_attention_layer(fmt):
    inputs = keras.Input((5, 8))
    model = keras.Model(inputs, CausalSelfAttention()(inputs))
    conversion, _ = assert_exact(model, fmt)
    assert "causal_mask = torch.tril(torch.ones(5, 5, dtype=torch.bool, device=x.device))" in conversion.code


def test_readers_inside_traced_layers_are_found():
    """What uses a model input inside a custom layer (compare draws token ids for an Embedding)."""
    from kerastorch_magic.graph import read_model

    inputs = keras.Input((6,), dtype="int32")
    graph = read_model(keras.Model(inputs, PositionalEmbedding(6, 20, 4)(inputs)))
    readers = graph.readers_inside(graph.inputs[0])
    assert [(node.class_name, node.layer.input_dim) for node in readers] == [("Embedding", 20)]


class TfPatches(layers.Layer):
    """keras-io's older ViT patch layer: tf.image.extract_patches, then a reshape."""

    def __init__(self, patch_size, **kwargs):
        super().__init__(**kwargs)
        self.patch_size = patch_size

    def call(self, images):
        import tensorflow as tf

        batch_size = tf.shape(images)[0]
        patches = tf.image.extract_patches(
            images=images,
            sizes=[1, self.patch_size, self.patch_size, 1],
            strides=[1, self.patch_size, self.patch_size, 1],
            rates=[1, 1, 1, 1],
            padding="VALID",
        )
        patch_dims = patches.shape[-1]
        return tf.reshape(patches, [batch_size, -1, patch_dims])  # batch_size is None while tracing


@pytest.mark.parametrize("fmt", FORMATS)
def test_tensorflow_extract_patches_is_traced(fmt):
    inputs = keras.Input((8, 8, 3))
    x = TfPatches(4)(layers.Conv2D(3, 1)(inputs))
    model = keras.Model(inputs, layers.Dense(5)(x))
    assert_exact(model, fmt)


class UnknownLengthPositions(layers.Layer):
    """Positions from the static shape ``x.shape[-1]``: None (not a size) for an unknown length.

    (``ops.shape(x)[-1]`` converts at any length: tests/test_dynamic_lengths.py.)
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.tokens = layers.Embedding(50, 8)
        self.positions = layers.Embedding(20, 8)

    def call(self, x):
        return self.tokens(x) + self.positions(ops.arange(0, x.shape[-1]))


def test_positions_of_an_unknown_length_are_refused_not_baked_in():
    # With Input((None,)) the length is None while tracing: arange(0, None) is empty, and an
    # empty constant baked into the port would fail at every real length.
    inputs = keras.Input((None,), dtype="int32")
    model = keras.Model(inputs, UnknownLengthPositions()(inputs))
    with pytest.raises(k2t.ConversionError, match=r"unknown while tracing.*keras.Input\(\(20,\)\)") as error:
        k2t.convert(model)
    assert "test_tracing.py:" in str(error.value)  # the user's line
    inputs = keras.Input((12,), dtype="int32")  # a fixed length converts exactly
    assert_exact(keras.Model(inputs, UnknownLengthPositions()(inputs)))
