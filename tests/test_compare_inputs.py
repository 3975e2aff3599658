"""compare's random inputs: what it draws must be a valid input of the Keras model itself."""

import keras
import numpy as np
from exactness import randomise_weights

import kerastorch_magic as k2t


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
