"""keras.ops FFTs (fft, fft2, ifft2, rfft, irfft) against Keras, in both input formats.

FNet (keras-io's mlp_image_classification) mixes tokens with ``keras.ops.fft2`` and keeps the
real part; spectral layers take ``rfft``/``irfft`` of a signal.
"""

from __future__ import annotations

import keras
import pytest
from exactness import assert_exact

ops = keras.ops


@pytest.mark.parametrize("input_format", ["channels_first", "channels_last"])
def test_fnet_token_mixing_with_fft2(input_format):
    """FNet's block: fft2 over (tokens, features) of a (real, zeros) pair, the real part kept."""
    inputs = keras.Input((6, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)  # channels-first in the port
    x = keras.layers.Reshape((48, 4))(x)
    real = ops.fft2((x, ops.zeros_like(x)))[0]
    outputs = keras.layers.LayerNormalization()(x + real)
    conversion, _ = assert_exact(keras.Model(inputs, outputs), input_format)
    assert "torch.fft.fft2(torch.complex(" in conversion.code


def test_complex_pairs_through_fft_ifft2_and_back():
    inputs = keras.Input((5, 7))
    imag_in = keras.Input((5, 7))
    real, imag = ops.fft((inputs, imag_in))
    real2, imag2 = ops.ifft2((real * 0.5, imag))
    outputs = ops.concatenate([real2, imag2], axis=-1)
    conversion, _ = assert_exact(keras.Model([inputs, imag_in], outputs))
    assert "torch.fft.fft(" in conversion.code and "torch.fft.ifft2(" in conversion.code


@pytest.mark.parametrize("fft_length", [None, 16])
def test_rfft_and_irfft_of_a_real_signal(fft_length):
    inputs = keras.Input((3, 12))
    real, imag = ops.rfft(inputs, fft_length=fft_length)
    signal = ops.irfft((real, imag * 0.5), fft_length=fft_length)
    outputs = ops.concatenate([signal, ops.sqrt(real * real + imag * imag)], axis=-1)
    conversion, _ = assert_exact(keras.Model(inputs, outputs))
    assert "torch.fft.rfft(" in conversion.code and "torch.fft.irfft(" in conversion.code
    assert ("n=16" in conversion.code) == (fft_length == 16)
