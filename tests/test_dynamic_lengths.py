"""Sizes unknown while tracing (``keras.Input((None,))``): positions and causal masks at any length.

keras-io's neural machine translation transformer reads its sequence length with
``ops.shape(x)[-1]`` and builds positions and a causal mask from it. Each model here is converted
once and compared with Keras at two lengths, so nothing computed from the tracing length (None)
can hide in the port.
"""

import keras
import numpy as np
import pytest
from exactness import assert_exact, relative_error, run_both, unwrap
from keras import layers, ops

import kerastorch_magic as k2t

FORMATS = ["channels_first", "channels_last"]
LENGTHS = (7, 11)


def token_ids(length: int, vocab: int = 50, seed: int = 0, padded: bool = True) -> np.ndarray:
    """A batch of two int64 sequences; the first ends in two padding zeros."""
    ids = np.random.default_rng(seed + length).integers(1, vocab, (2, length)).astype("int64")
    if padded:
        ids[0, -2:] = 0
    return ids


def assert_exact_at_lengths(model, fmt, make_inputs, lengths=LENGTHS):
    """Convert once (compared at the first length), then compare the same port at the others."""
    conversion, worst = assert_exact(model, fmt, inputs=make_inputs(lengths[0]))
    for length in lengths[1:]:
        expected, actual = run_both(model, conversion, make_inputs(length))
        for spec, keras_out, torch_out in zip(conversion.outputs, expected, actual):
            keras_out = np.transpose(keras_out, spec.perm)
            assert torch_out.shape == keras_out.shape
            error = relative_error(keras_out, torch_out.numpy())
            assert error <= 1e-5, f"length {length}: relative error {error:.3g}\n{conversion.code}"
            worst = max(worst, error)
    return conversion, worst


# -- keras-io's neural_machine_translation_with_transformer.py, its layers as written there --------
class PositionalEmbedding(layers.Layer):
    def __init__(self, sequence_length, vocab_size, embed_dim, **kwargs):
        super().__init__(**kwargs)
        self.token_embeddings = layers.Embedding(input_dim=vocab_size, output_dim=embed_dim)
        self.position_embeddings = layers.Embedding(input_dim=sequence_length, output_dim=embed_dim)

    def call(self, inputs):
        length = ops.shape(inputs)[-1]
        positions = ops.arange(0, length, 1)
        embedded_tokens = self.token_embeddings(inputs)
        embedded_positions = self.position_embeddings(positions)
        return embedded_tokens + embedded_positions

    def compute_mask(self, inputs, mask=None):
        if mask is None:
            return None
        return ops.not_equal(inputs, 0)


class MaskingPositionalEmbedding(PositionalEmbedding):
    """The same, masking the padding zeros as ``Embedding(mask_zero=True)`` does."""

    def compute_mask(self, inputs, mask=None):
        return ops.not_equal(inputs, 0)


class TransformerEncoder(layers.Layer):
    def __init__(self, embed_dim, dense_dim, num_heads, **kwargs):
        super().__init__(**kwargs)
        self.attention = layers.MultiHeadAttention(num_heads=num_heads, key_dim=embed_dim)
        self.dense_proj = keras.Sequential(
            [layers.Dense(dense_dim, activation="relu"), layers.Dense(embed_dim)]
        )
        self.layernorm_1 = layers.LayerNormalization()
        self.layernorm_2 = layers.LayerNormalization()
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is not None:
            padding_mask = ops.cast(mask[:, None, :], dtype="int32")
        else:
            padding_mask = None
        attention_output = self.attention(query=inputs, value=inputs, key=inputs, attention_mask=padding_mask)
        proj_input = self.layernorm_1(inputs + attention_output)
        proj_output = self.dense_proj(proj_input)
        return self.layernorm_2(proj_input + proj_output)


class TransformerDecoder(layers.Layer):
    def __init__(self, embed_dim, latent_dim, num_heads, **kwargs):
        super().__init__(**kwargs)
        self.attention_1 = layers.MultiHeadAttention(num_heads=num_heads, key_dim=embed_dim)
        self.attention_2 = layers.MultiHeadAttention(num_heads=num_heads, key_dim=embed_dim)
        self.dense_proj = keras.Sequential(
            [layers.Dense(latent_dim, activation="relu"), layers.Dense(embed_dim)]
        )
        self.layernorm_1 = layers.LayerNormalization()
        self.layernorm_2 = layers.LayerNormalization()
        self.layernorm_3 = layers.LayerNormalization()
        self.supports_masking = True

    def call(self, inputs, encoder_outputs, mask=None):
        causal_mask = self.get_causal_attention_mask(inputs)
        if mask is not None:
            padding_mask = ops.cast(mask[:, None, :], dtype="int32")
            padding_mask = ops.minimum(padding_mask, causal_mask)
        else:
            padding_mask = None
        attention_output_1 = self.attention_1(
            query=inputs, value=inputs, key=inputs, attention_mask=causal_mask
        )
        out_1 = self.layernorm_1(inputs + attention_output_1)
        attention_output_2 = self.attention_2(
            query=out_1, value=encoder_outputs, key=encoder_outputs, attention_mask=padding_mask
        )
        out_2 = self.layernorm_2(out_1 + attention_output_2)
        proj_output = self.dense_proj(out_2)
        return self.layernorm_3(out_2 + proj_output)

    def get_causal_attention_mask(self, inputs):
        input_shape = ops.shape(inputs)
        batch_size, sequence_length = input_shape[0], input_shape[1]
        i = ops.arange(sequence_length)[:, None]
        j = ops.arange(sequence_length)
        mask = ops.cast(i >= j, dtype="int32")
        mask = ops.reshape(mask, (1, input_shape[1], input_shape[1]))
        mult = ops.concatenate([ops.expand_dims(batch_size, -1), ops.convert_to_tensor([1, 1])], axis=0)
        return ops.tile(mask, mult)

    def compute_output_spec(self, inputs, encoder_outputs, mask=None):
        # Not in keras-io: Keras 3.15's TensorFlow backend cannot build this layer symbolically
        # (its tile iterates the symbolic `mult`); eagerly (and in the port) tile works.
        return keras.KerasTensor(inputs.shape, inputs.dtype)


VOCAB, SEQUENCE_LENGTH, EMBED, LATENT, HEADS = 50, 20, 16, 32, 2


def nmt_transformer(embedding=PositionalEmbedding):
    """keras-io's model assembled as there (encoder, decoder as nested models), small sizes.

    ``embedding=MaskingPositionalEmbedding`` is the keras-io example exactly: the padding masks
    reach both the encoder's and the decoder's attention.
    """
    encoder_inputs = keras.Input(shape=(None,), dtype="int64", name="encoder_inputs")
    x = embedding(SEQUENCE_LENGTH, VOCAB, EMBED)(encoder_inputs)
    encoder_outputs = TransformerEncoder(EMBED, LATENT, HEADS)(x)

    decoder_inputs = keras.Input(shape=(None,), dtype="int64", name="decoder_inputs")
    encoded_seq_inputs = keras.Input(shape=(None, EMBED), name="decoder_state_inputs")
    x = embedding(SEQUENCE_LENGTH, VOCAB, EMBED)(decoder_inputs)
    decoder_layer = TransformerDecoder(EMBED, LATENT, HEADS)
    sample = np.zeros((1, 3, EMBED), "float32")
    decoder_layer(sample, sample)  # builds its sublayers (see compute_output_spec)
    x = decoder_layer(x, encoded_seq_inputs)
    x = layers.Dropout(0.5)(x)
    decoder_outputs = layers.Dense(VOCAB, activation="softmax")(x)
    decoder = keras.Model([decoder_inputs, encoded_seq_inputs], decoder_outputs)

    decoder_outputs = decoder([decoder_inputs, encoder_outputs])
    return keras.Model([encoder_inputs, decoder_inputs], decoder_outputs, name="transformer")


# -- tests ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_positional_embedding_at_any_length(fmt):
    inputs = keras.Input((None,), dtype="int64")
    model = keras.Model(inputs, PositionalEmbedding(SEQUENCE_LENGTH, VOCAB, EMBED)(inputs))
    conversion, _ = assert_exact_at_lengths(model, fmt, lambda n: [token_ids(n)])
    assert "positions = torch.arange(inputs.shape[1], device=inputs.device)" in conversion.code
    assert "int32 in Keras" in conversion.code  # torch's int64 positions are explained


def test_nmt_transformer_at_any_length():
    """The whole encoder-decoder (the causal mask tiled over the batch) at lengths 7 and 11."""
    model = nmt_transformer()
    conversion, _ = assert_exact_at_lengths(
        model, "channels_first", lambda n: [token_ids(n), token_ids(n, seed=1)]
    )
    code = unwrap(conversion.code)
    assert ".reshape(1, inputs.shape[1], inputs.shape[1])" in code
    assert ".repeat(inputs.shape[0], 1, 1)" in code
    assert "torch.arange(inputs.shape[1], device=inputs.device)" in code
    assert "attention_1 = F.scaled_dot_product_attention(" in code  # not named after the mask


def test_masked_nmt_transformer_at_any_length():
    """With padding masks: the decoder's traced call() reads its input's mask (not given as mask=)."""
    model = nmt_transformer(MaskingPositionalEmbedding)
    conversion, _ = assert_exact_at_lengths(
        model, "channels_first", lambda n: [token_ids(n), token_ids(n, seed=1)]
    )
    assert "inputs_mask" in unwrap(conversion.code)  # the mask is a named argument of forward


@pytest.mark.parametrize("fmt", FORMATS)
def test_masked_encoder_at_any_length(fmt):
    """Padding masks (from compute_mask) reach the encoder's attention, as its inputs' masks too."""
    inputs = keras.Input((None,), dtype="int64")
    x = MaskingPositionalEmbedding(SEQUENCE_LENGTH, VOCAB, EMBED)(inputs)
    model = keras.Model(inputs, TransformerEncoder(EMBED, LATENT, HEADS)(x))
    assert_exact_at_lengths(model, fmt, lambda n: [token_ids(n)])


class OffsetPositions(layers.Layer):
    """ops.arange(n) and ops.arange(start, n) on the sequence axis of a (batch, length, 8) tensor."""

    def __init__(self, start, **kwargs):
        super().__init__(**kwargs)
        self.start = start
        self.positions = layers.Embedding(SEQUENCE_LENGTH, 8)

    def call(self, x):
        length = ops.shape(x)[1]
        positions = ops.arange(length) if self.start == 0 else ops.arange(self.start, length)
        return x[:, self.start :] + self.positions(positions)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("start", [0, 2])
def test_arange_over_a_permuted_axis(fmt, start):
    """Between convolutions the sequence is channels-first in torch: its length is x.shape[2]."""
    inputs = keras.Input((None, 3))
    x = layers.Conv1D(8, 3, padding="same")(inputs)
    x = OffsetPositions(start)(x)
    model = keras.Model(inputs, layers.Conv1D(4, 3, padding="same")(x))
    rng = np.random.default_rng(0)
    conversion, _ = assert_exact_at_lengths(
        model, fmt, lambda n: [rng.normal(size=(2, n, 3)).astype("float32")]
    )
    # in both formats: the convolutions keep the sequence channels-first between them
    assert f"torch.arange({'2, ' if start else ''}x.shape[2], device=x.device)" in conversion.code


class HeadsByLength(layers.Layer):
    """A reshape to (batch, length, heads, head_dim) with both read from ops.shape."""

    def call(self, x):
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        heads = ops.reshape(x, (batch, length, 2, 4))
        return ops.reshape(ops.softmax(heads, axis=-1), (batch, -1, 8))


def test_reshape_by_runtime_sizes():
    inputs = keras.Input((None, 8))
    model = keras.Model(inputs, HeadsByLength()(inputs))
    rng = np.random.default_rng(0)
    conversion, _ = assert_exact_at_lengths(
        model, "channels_last", lambda n: [rng.normal(size=(2, n, 8)).astype("float32")]
    )
    assert ".reshape(x.shape[0], x.shape[1], 2, 4)" in conversion.code
    assert ".reshape(x.shape[0], -1, 8)" in conversion.code  # the batch alone: as before


class FoldNodesIntoBatch(layers.Layer):
    """keras-io's traffic forecasting: (batch, time, nodes, features) -> one sequence per node."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.lstm, self.dense = layers.LSTM(8), layers.Dense(3)

    def call(self, x):
        x = ops.transpose(x, (2, 0, 1, 3))
        nodes, batch, time, features = ops.shape(x)
        x = ops.reshape(x, (batch * nodes, time, features))  # a product with the unknown batch
        y = ops.reshape(self.dense(self.lstm(x)), (nodes, batch, 3))
        return ops.transpose(y, (1, 2, 0))


def test_a_product_of_sizes_is_the_reshape_entry_to_infer():
    inputs = keras.Input((12, 5, 2))
    model = keras.Model(inputs, FoldNodesIntoBatch()(inputs))
    conversion, _ = assert_exact(model, "channels_last")
    assert ".reshape(-1, 12, 2)" in conversion.code  # -1 infers batch * nodes exactly
    rng = np.random.default_rng(1)
    for batch in (1, 3):  # any batch, not the traced one
        x = rng.normal(size=(batch, 12, 5, 2)).astype("float32")
        (expected,), (actual,) = run_both(model, conversion, [x])
        assert actual.shape == (batch, 3, 5) and relative_error(expected, actual.numpy()) < 1e-5


class SizeProductAndInferred(layers.Layer):
    def call(self, x):
        return ops.reshape(x, (ops.shape(x)[0] * 2, -1))


class SizeProductInArange(layers.Layer):
    def call(self, x):
        return x + ops.cast(ops.arange(ops.shape(x)[1] * 1), "float32")[:, None]


class SizeArithmetic(layers.Layer):
    def call(self, x):
        return x[:, 1:] + ops.cast(ops.arange(ops.shape(x)[1] - 1), "float32")[:, None]


class SizeAsNumber(layers.Layer):
    def call(self, x):
        n = ops.shape(x)[1]
        return ops.matmul(ops.tril(ops.ones((n, n))), x)


class SizeInSlice(layers.Layer):
    def call(self, x, other):
        return x[:, : ops.shape(other)[1]]


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda x: SizeArithmetic()(x), r"`-` on the length of axis 1 of a \(None, None, 4\) tensor"),
        (lambda x: SizeAsNumber()(x), r"given to an op that needs a number"),
        (lambda x: SizeInSlice()(x, x), r"GetItem given the length of axis 1"),
        (lambda x: SizeProductAndInferred()(x), r"another unknown size besides \(the batch size"),
        (lambda x: SizeProductInArange()(x), r"given to an op that needs a number"),
    ],
    ids=["arithmetic", "ops.ones", "slice", "product and -1", "product in arange"],
)
def test_other_uses_of_an_unknown_size_are_refused(make, match):
    inputs = keras.Input((None, 4))
    model = keras.Model(inputs, make(inputs))
    with pytest.raises(k2t.ConversionError, match=match) as error:
        k2t.convert(model)
    message = str(error.value)
    assert "unknown while tracing" in message and "ops.arange, ops.reshape or ops.tile" in message
    assert "test_dynamic_lengths.py:" in message or "GetItem" in message  # the user's line
