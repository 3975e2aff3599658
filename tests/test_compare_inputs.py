"""compare's random inputs: what it draws must be a valid input of the Keras model itself."""

import keras
import numpy as np
from exactness import randomise_weights

import kerastorch_magic as k2t
from kerastorch_magic.compare import inputs
from kerastorch_magic.graph import read_model


class _PositionalEmbedding(keras.layers.Layer):
    """Deep Learning with Python (3rd ed.), chapter 15: positions computed from the token ids."""

    def __init__(self, sequence_length, input_dim, output_dim, **kwargs):
        super().__init__(**kwargs)
        self.token_embeddings = keras.layers.Embedding(input_dim, output_dim)
        self.position_embeddings = keras.layers.Embedding(sequence_length, output_dim)

    def call(self, inputs):
        positions = keras.ops.cumsum(keras.ops.ones_like(inputs), axis=-1) - 1
        return self.token_embeddings(inputs) + self.position_embeddings(positions)


def test_unknown_sequence_length_fits_the_position_table():
    """An Input(shape=(None,)) gets sequences no longer than the positions Keras can look up.

    (64 steps, the default for an unknown axis, made Keras's own position Embedding fail.)
    """
    tokens = keras.Input((None,), dtype="int32", name="tokens")
    model = keras.Model(tokens, keras.layers.Dense(3)(_PositionalEmbedding(12, 50, 4)(tokens)))
    randomise_weights(model, inputs=[np.arange(24, dtype="int32").reshape(2, 12) % 50])
    comparison = k2t.compare(model, k2t.convert(model))
    assert comparison.ok, comparison
    assert "tokens (2, 12) int32" in comparison.info.input


def test_token_ids_fit_the_vocabulary_of_an_embedding_inside_a_traced_layer():
    """keras-io's machine-translation Transformer: a custom PositionalEmbedding reads the tokens."""
    tokens = keras.Input((6,), dtype="int32", name="tokens")
    model = keras.Model(tokens, keras.layers.Dense(3)(_PositionalEmbedding(6, 3, 4)(tokens)))
    assert_compares_with_ids_below(model, 3)


def test_a_float_input_that_an_embedding_reads_gets_token_ids():
    """handson-ml3 chapter 15: Sequential([Embedding(n_notes, 5, input_shape=[None]), ...]):
    the input is float32, as Keras's default, and holds ids; normal draws were out of range."""
    model = keras.Sequential(
        [keras.Input((None,)), keras.layers.Embedding(4, 5), keras.layers.Conv1D(3, 2, padding="causal")]
    )
    assert_compares_with_ids_below(model, 4)


def assert_compares_with_ids_below(model, vocabulary):
    (ids,), _ = inputs.prepare(read_model(model), None, batch_size=2, seed=0)
    assert ids.min() >= 0 and ids.max() < vocabulary and np.array_equal(ids, ids.round())
    randomise_weights(model, inputs=[np.arange(12).reshape(2, 6) % vocabulary])
    comparison = k2t.compare(model, k2t.convert(model))
    assert comparison.ok, comparison


def test_an_image_of_unknown_size_is_drawn_large_enough_for_the_model():
    """keras-io's deep_dream: InceptionV3(include_top=False) fails in Keras below 75 pixels."""
    image = keras.Input((None, None, 2), name="image")
    features = keras.layers.MaxPooling2D(2)(keras.layers.Conv2D(3, 30, strides=2)(image))
    model = keras.Model(image, keras.layers.GlobalAveragePooling2D()(features))  # 64 px: 18, 9
    (drawn,), _ = inputs.prepare(read_model(model), None, batch_size=2, seed=0)
    assert drawn.shape == (2, 64, 64, 2)
    deeper = keras.Model(image, keras.layers.Conv2D(2, 10)(features))  # 64 px: 9 < 10; 96: 17
    comparison = k2t.compare(deeper, k2t.convert(deeper))
    assert comparison.ok, comparison
    assert "image (2, 96, 96, 2) float32" in comparison.info.input
