"""The three Keras models of the guide the project started from (shared/seed), both formats."""

import keras
import pytest
from exactness import assert_exact

FORMATS = ["channels_first", "channels_last"]


def single_same_conv():
    return keras.Sequential(
        [
            keras.Input((28, 28, 3)),
            keras.layers.Conv2D(32, (3, 3), activation="relu", padding="same"),
        ]
    )


def sequential_cnn():
    return keras.Sequential(
        [
            keras.Input((64, 64, 3)),
            keras.layers.Conv2D(32, (3, 3), activation="relu"),
            keras.layers.MaxPooling2D((2, 2)),
            keras.layers.Conv2D(64, (3, 3), activation="relu"),
            keras.layers.MaxPooling2D((2, 2)),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )


def conv_bn_pool():
    return keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(32, (3, 3), activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.MaxPooling2D((2, 2)),
        ]
    )


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("build", [single_same_conv, sequential_cnn, conv_bn_pool])
def test_seed_example_matches_keras(build, fmt):
    conversion, _ = assert_exact(build(), fmt)
    assert "class Net(nn.Module)" in conversion.code


def test_sequential_cnn_reads_like_hand_written_pytorch():
    (code,) = [assert_exact(sequential_cnn())[0].code]
    assert "self.conv2d = nn.Conv2d(3, 32, kernel_size=3)" in code
    assert "x = F.relu(self.conv2d(x), inplace=True)" in code
    assert "x = torch.flatten(x, 1)" in code
    assert "F.softmax(self.dense(x), dim=1)" in code
    assert "reordered" in code  # the folded flatten order is explained
    assert "nn.init.xavier_uniform_(layer.weight)" in code
