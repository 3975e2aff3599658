"""Recurrent layers against Keras: SimpleRNN, LSTM, GRU, RNN cells, Bidirectional, TimeDistributed.

Random weights, random inputs; masks with padding at the end, holes in the middle and fully
masked rows; both input formats.
"""

import re

import keras
import numpy as np
import pytest
import torch
from exactness import RTOL, assert_exact, randomise_weights, unwrap
from test_activations import assert_each_output_exact

import kerastorch_magic as k2t

FORMATS = ["channels_first", "channels_last"]
L = keras.layers

# Zeros at the end, in the middle, a fully padded row and a leading zero.
PADDED_IDS = np.array(
    [[1, 2, 3, 0, 0, 0], [4, 0, 5, 6, 0, 7], [0, 0, 0, 0, 0, 0], [0, 3, 0, 2, 1, 0]], dtype="int32"
)


def _masked_floats(seed=0):
    """(4, 6, 3) floats whose all-zero steps follow PADDED_IDS (for Masking(0.0))."""
    values = np.random.default_rng(seed).normal(size=(4, 6, 3)).astype("float32")
    return values * (PADDED_IDS != 0)[..., None]


def assert_branches_exact(model_inputs, branches: dict, fmt="channels_first", inputs=None):
    """Every branch an output of one model, each compared with Keras; returns the conversion.

    A branch holding several outputs (``return_state``, Bidirectional ``merge_mode=None``)
    contributes each, labelled ``"<label> 0"``, ``"<label> 1"``...
    """
    outputs = {}
    for label, result in branches.items():
        if isinstance(result, (list, tuple)):
            outputs.update({f"{label} {i}": tensor for i, tensor in enumerate(result)})
        else:
            outputs[label] = result
    model = keras.Model(model_inputs, list(outputs.values()))
    conversion, _ = assert_each_output_exact(model, fmt, list(outputs), inputs=inputs)
    return conversion


@pytest.mark.parametrize("fmt", FORMATS)
def test_recurrent_layer_options(fmt):
    x = keras.Input((5, 3), name="sequence")
    conv = L.Conv1D(3, 2, padding="same", name="conv")(x)  # channels-first in torch when fmt says so
    branches = {
        "LSTM": L.LSTM(4, name="lstm")(x),
        "LSTM sequences": L.LSTM(4, return_sequences=True, name="lstm_seq")(x),
        "LSTM go_backwards": L.LSTM(4, return_sequences=True, go_backwards=True, name="lstm_back")(x),
        "LSTM unroll": L.LSTM(4, unroll=True, name="lstm_unroll")(x),
        "LSTM no bias": L.LSTM(4, use_bias=False, return_sequences=True, name="lstm_nobias")(x),
        "LSTM relu, hard_sigmoid": L.LSTM(
            4, activation="relu", recurrent_activation="hard_sigmoid", return_sequences=True, name="lstm_act"
        )(x),
        "LSTM dropout": L.LSTM(4, dropout=0.3, recurrent_dropout=0.2, name="lstm_drop")(x),
        "LSTM after Conv1D": L.LSTM(4, name="lstm_conv")(conv),
        "GRU": L.GRU(4, name="gru")(x),
        "GRU reset_after=False": L.GRU(4, reset_after=False, return_sequences=True, name="gru_before")(x),
        "GRU no bias": L.GRU(4, use_bias=False, name="gru_nobias")(x),
        "GRU no bias reset_after=False": L.GRU(4, use_bias=False, reset_after=False, name="gru_nb_before")(x),
        "GRU leaky_relu go_backwards": L.GRU(
            3, activation="leaky_relu", go_backwards=True, return_sequences=True, name="gru_leaky"
        )(x),
        "SimpleRNN": L.SimpleRNN(4, return_sequences=True, name="rnn")(x),
        "SimpleRNN relu": L.SimpleRNN(4, activation="relu", name="rnn_relu")(x),
        "SimpleRNN elu no bias": L.SimpleRNN(4, activation="elu", use_bias=False, name="rnn_elu")(x),
        "LSTM output, h, c": L.LSTM(4, return_state=True, name="lstm_state")(x),
        "GRU sequences, h": L.GRU(3, return_state=True, return_sequences=True, name="gru_state")(x),
    }
    code = unwrap(assert_branches_exact(x, branches, fmt).code)
    assert "self.lstm = nn.LSTM(3, 4, batch_first=True)" in code
    assert "self.gru = nn.GRU(3, 4, batch_first=True)" in code
    assert "self.gru_nobias = nn.GRU(3, 4, batch_first=True, bias=False)" in code
    assert "self.lstm_nobias = nn.LSTM(3, 4, batch_first=True, bias=False)" in code
    assert 'nn.RNN(3, 4, batch_first=True, nonlinearity="relu")' in code
    assert "GRUCellWithOptions(3, 4, activation=torch.tanh, recurrent_activation=torch.sigmoid, " in code
    assert "activation=F.relu, recurrent_activation=F.hardsigmoid" in code
    assert "activation=lambda x: F.leaky_relu(x, negative_slope=0.2)" in code
    assert "gate blocks reordered from Keras's z, r, h to torch's r, z, n" in code
    assert "recurrent_dropout" in code and "training=self.training" in code
    # Keras's initialisers: orthogonal recurrent kernels, unit_forget_bias.
    assert re.search(r"nn\.init\.orthogonal_\(\s*\w+\.weight_hh_l0", code)
    assert re.search(r"nn\.init\.ones_\(\s*[\w.]+\.bias_ih_l0\[4:8\]\)", code)


@pytest.mark.parametrize("fmt", FORMATS)
def test_masked_recurrent_layers(fmt):
    """Embedding(mask_zero=True): padding at the end, holes, fully masked rows."""
    tokens = keras.Input((6,), dtype="int32", name="tokens")
    embedded = L.Embedding(10, 3, mask_zero=True, name="embedding")(tokens)
    branches = {
        "LSTM": L.LSTM(4, name="lstm")(embedded),
        "LSTM sequences": L.LSTM(4, return_sequences=True, name="lstm_seq")(embedded),
        "GRU go_backwards": L.GRU(4, return_sequences=True, go_backwards=True, name="gru_back")(embedded),
        "LSTM go_backwards last": L.LSTM(4, go_backwards=True, name="lstm_back_last")(embedded),
        "LSTM use_bias=False": L.LSTM(3, use_bias=False, return_sequences=True, name="lstm_nobias")(embedded),
        "GRU reset_after=False": L.GRU(4, reset_after=False, return_sequences=True, name="gru_before")(
            embedded
        ),
        "GRU reset_after=False last": L.GRU(4, reset_after=False, name="gru_before_last")(embedded),
        "SimpleRNN": L.SimpleRNN(3, name="rnn")(embedded),
        "SimpleRNN softsign sequences": L.SimpleRNN(
            3, activation="softsign", return_sequences=True, go_backwards=True, name="rnn_softsign"
        )(embedded),
        "LSTM output, h, c": L.LSTM(4, return_state=True, name="lstm_state")(embedded),
        "stacked": L.LSTM(3, name="top")(L.GRU(4, return_sequences=True, name="bottom")(embedded)),
    }
    code = unwrap(assert_branches_exact(tokens, branches, fmt, inputs=[PADDED_IDS]).code)
    assert "keras_masked_rnn(self.lstm, embedding, " in code
    assert "pack_padded_sequence" in code
    assert "keras_rnn_loop(self.gru_before, embedding, mask=" in code


def test_mask_propagates_through_return_sequences():
    """LSTM(return_sequences=True) hands the mask on: the pooling after it averages unmasked steps."""
    tokens = keras.Input((6,), dtype="int32")
    embedded = L.Embedding(10, 3, mask_zero=True)(tokens)
    sequence = L.Bidirectional(L.LSTM(4, return_sequences=True))(embedded)
    model = keras.Model(tokens, L.GlobalAveragePooling1D()(L.GRU(4, return_sequences=True)(sequence)))
    # No fully padded row here: its masked average is 0 / 0 in Keras too.
    assert_exact(model, inputs=[PADDED_IDS[[0, 1, 3]]])


@pytest.mark.parametrize("fmt", FORMATS)
def test_masking_layer_feeds_recurrent_layers(fmt):
    values = keras.Input((6, 3), name="values")
    masked = L.Masking(0.0, name="masking")(values)
    branches = {
        "masked": masked,
        "LSTM": L.LSTM(4, name="lstm")(masked),
        "GRU sequences": L.GRU(4, return_sequences=True, name="gru")(masked),
        "Bidirectional": L.Bidirectional(L.LSTM(3, return_sequences=True), name="bi")(masked),
    }
    assert_branches_exact(values, branches, fmt, inputs=[_masked_floats()])


MERGE_MODES = ["concat", "sum", "mul", "ave", None]


@pytest.mark.parametrize("merge_mode", MERGE_MODES)
def test_bidirectional_merge_modes(merge_mode):
    tokens = keras.Input((6,), dtype="int32", name="tokens")
    embedded = L.Embedding(10, 3, mask_zero=True, name="embedding")(tokens)
    sequence = keras.Input((6, 3), name="sequence")
    branches = {}
    for source, x in (("masked", embedded), ("plain", sequence)):
        branches[f"{source} LSTM seq"] = L.Bidirectional(L.LSTM(3, return_sequences=True), merge_mode)(x)
        branches[f"{source} GRU last"] = L.Bidirectional(L.GRU(3), merge_mode)(x)
        branches[f"{source} GRU reset_after=False seq"] = L.Bidirectional(
            L.GRU(3, reset_after=False, return_sequences=True), merge_mode
        )(x)
        branches[f"{source} SimpleRNN relu last"] = L.Bidirectional(
            L.SimpleRNN(3, activation="relu"), merge_mode
        )(x)
    inputs = [PADDED_IDS, np.random.default_rng(3).normal(size=(4, 6, 3)).astype("float32")]
    conversion = assert_branches_exact([tokens, sequence], branches, inputs=inputs)
    assert "bidirectional=True" in conversion.code


@pytest.mark.parametrize("masked", [False, True])
def test_bidirectional_states_backward_layer_initial_state(masked):
    tokens = keras.Input((6,), dtype="int32", name="tokens")
    embedded = L.Embedding(10, 3, mask_zero=masked, name="embedding")(tokens)
    h = keras.Input((3,), name="h")
    c = keras.Input((3,), name="c")
    branches = {
        "sequence, h fwd, c fwd, h bwd, c bwd": L.Bidirectional(
            L.LSTM(3, return_state=True, return_sequences=True), name="states"
        )(embedded),
        "backward_layer GRU": L.Bidirectional(
            L.LSTM(3, return_sequences=True),
            backward_layer=L.GRU(3, go_backwards=True, return_sequences=True),
            name="mixed",
        )(embedded),
        "initial_state": L.Bidirectional(L.LSTM(3), merge_mode="sum", name="started")(
            embedded, initial_state=[h, c, c, h]
        ),
    }
    rng = np.random.default_rng(2)
    inputs = [PADDED_IDS, *(rng.normal(size=(4, 3)).astype("float32") for _ in range(2))]
    assert_branches_exact([tokens, h, c], branches, inputs=inputs)


@pytest.mark.parametrize("masked", [False, True])
def test_encoder_decoder_initial_state(masked):
    """seq2seq: the encoder's final states start the decoder (another input, another branch)."""
    source = keras.Input((6,), dtype="int32", name="source")
    target = keras.Input((5,), dtype="int32", name="target")
    encoded = L.Embedding(10, 4, mask_zero=masked, name="source_embedding")(source)
    _, h, c = L.LSTM(5, return_state=True, name="encoder")(encoded)
    decoded = L.Embedding(10, 4, mask_zero=masked, name="target_embedding")(target)
    # keras-io's lstm_seq2seq: the decoder returns states that nothing reads.
    sequence, _, _ = L.LSTM(5, return_sequences=True, return_state=True, name="decoder")(
        decoded, initial_state=[h, c]
    )
    gru_sequence = L.GRU(5, return_sequences=True, reset_after=False, name="gru_decoder")(
        decoded, initial_state=[h]
    )
    model = keras.Model([source, target], [L.Dense(7, name="logits")(sequence), gru_sequence])
    target_ids = np.array([[1, 2, 0, 0, 0], [3, 0, 4, 0, 5], [0, 0, 0, 0, 0], [6, 7, 8, 9, 1]], dtype="int32")
    conversion, _ = assert_exact(model, inputs=[PADDED_IDS, target_ids])
    code = unwrap(conversion.code)
    # The encoder's (N, H) states start the decoder as (1, N, H).
    assert "(encoder_1.unsqueeze(0), encoder_2.unsqueeze(0)))" in code
    assert "decoder, _decoder_1, _decoder_2 = " in code  # unread states: named as unused


@pytest.mark.parametrize("masked", [False, True])
def test_rnn_with_builtin_cells(masked):
    tokens = keras.Input((6,), dtype="int32", name="tokens")
    embedded = L.Embedding(10, 3, mask_zero=masked, name="embedding")(tokens)
    branches = {
        "LSTMCell": L.RNN(L.LSTMCell(4), name="lstm_cell")(embedded),
        "GRUCell sequences": L.RNN(L.GRUCell(4), return_sequences=True, name="gru_cell")(embedded),
        "SimpleRNNCell backwards": L.RNN(
            L.SimpleRNNCell(3), go_backwards=True, return_sequences=True, name="rnn_cell"
        )(embedded),
        "StackedRNNCells": L.RNN(
            L.StackedRNNCells([L.LSTMCell(4), L.GRUCell(3, reset_after=False), L.SimpleRNNCell(2)]),
            return_sequences=True,
            name="stacked",
        )(embedded),
        "StackedRNNCells backwards": L.RNN(
            L.StackedRNNCells([L.GRUCell(4), L.LSTMCell(3)]), go_backwards=True, name="stacked_back"
        )(embedded),
    }
    assert_branches_exact(tokens, branches, inputs=[PADDED_IDS])


def test_refusals_name_layer_and_option():
    x = keras.Input((4, 3), batch_size=2)
    model = keras.Model(x, L.LSTM(3, stateful=True, name="remembering")(x))
    with pytest.raises(k2t.ConversionError, match=r"'remembering' \(LSTM\): stateful=True"):
        k2t.convert(model)

    y = keras.Input((4, 3))
    model = keras.Model(y, L.RNN(StartingCell(3), name="custom")(y))
    with pytest.raises(k2t.ConversionError, match=r"'custom' \(RNN\): cell StartingCell defines get_initial"):
        k2t.convert(model)


# -- custom cells, traced ---------------------------------------------------------------------------
@keras.saving.register_keras_serializable("test_recurrent")
class MinimalRNNCell(L.Layer):
    """keras-io's minimal RNN cell (an int state_size, add_weight kernels)."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.state_size = units

    def build(self, input_shape):
        self.kernel = self.add_weight(
            shape=(input_shape[-1], self.units), initializer="uniform", name="kernel"
        )
        self.recurrent_kernel = self.add_weight(
            shape=(self.units, self.units), initializer="uniform", name="recurrent_kernel"
        )

    def call(self, inputs, states):
        prev_output = states[0]
        h = keras.ops.matmul(inputs, self.kernel)
        output = h + keras.ops.matmul(prev_output, self.recurrent_kernel)
        return output, [output]

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable("test_recurrent")  # Bidirectional copies it
class PeepholeLSTMCell(L.Layer):
    """A textbook peephole LSTM: two states, the gates also read the cell state."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.state_size = [units, units]
        self.output_size = units

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], 4 * self.units), name="kernel")
        self.recurrent_kernel = self.add_weight(
            shape=(self.units, 4 * self.units), initializer="orthogonal", name="recurrent_kernel"
        )
        self.peephole = self.add_weight(shape=(3, self.units), initializer="zeros", name="peephole")
        self.bias = self.add_weight(shape=(4 * self.units,), initializer="zeros", name="bias")

    def call(self, inputs, states):
        h, c = states
        z = keras.ops.matmul(inputs, self.kernel) + keras.ops.matmul(h, self.recurrent_kernel) + self.bias
        i, f, g, o = keras.ops.split(z, 4, axis=-1)
        i = keras.ops.sigmoid(i + self.peephole[0] * c)
        f = keras.ops.sigmoid(f + self.peephole[1] * c)
        c = f * c + i * keras.ops.tanh(g)
        o = keras.ops.sigmoid(o + self.peephole[2] * c)
        h = o * keras.ops.tanh(c)
        return h, [h, c]

    def get_config(self):
        return {**super().get_config(), "units": self.units}


class StartingCell(MinimalRNNCell):
    def get_initial_state(self, batch_size=None):
        return [keras.ops.ones((batch_size, self.units))]


@pytest.mark.parametrize("masked", [False, True])
def test_rnn_with_custom_cells_traced(masked):
    tokens = keras.Input((6,), dtype="int32", name="tokens")
    embedded = L.Embedding(10, 3, mask_zero=masked, name="embedding")(tokens)
    h = keras.Input((4,), name="h")
    branches = {
        "minimal": L.RNN(MinimalRNNCell(4), name="minimal")(embedded),
        "minimal sequences backwards": L.RNN(
            MinimalRNNCell(3), return_sequences=True, go_backwards=True, name="minimal_back"
        )(embedded),
        "minimal output, h": L.RNN(MinimalRNNCell(4), return_state=True, name="minimal_state")(embedded),
        "minimal initial_state": L.RNN(MinimalRNNCell(4), return_sequences=True, name="started")(
            embedded, initial_state=[h]
        ),
        "peephole": L.RNN(PeepholeLSTMCell(4), name="peephole")(embedded),
        "peephole backwards sequences, h, c": L.RNN(
            PeepholeLSTMCell(4),
            return_sequences=True,
            return_state=True,
            go_backwards=True,
            name="peephole_state",
        )(embedded),
        "Bidirectional": L.Bidirectional(L.RNN(PeepholeLSTMCell(3), return_sequences=True), name="bi")(
            embedded
        ),
        "stacked": L.RNN(L.StackedRNNCells([MinimalRNNCell(4), L.GRUCell(3)]), name="stacked")(embedded),
    }
    inputs = [PADDED_IDS, np.random.default_rng(6).normal(size=(4, 4)).astype("float32")]
    code = unwrap(assert_branches_exact([tokens, h], branches, inputs=inputs).code)
    # One class per traced step (sizes differ: numbered), the weights named after Keras's.
    assert "class MinimalRNNCell(nn.Module):" in code and "class PeepholeLSTMCell(nn.Module):" in code
    assert re.search(r"def forward\(self, inputs, \w+, \w+\):", code)  # the states, flat
    assert "self.peephole = nn.Parameter(torch.empty(3, 4))" in code
    assert "nn.init.uniform_(" in code  # keras-io's initializer="uniform"
    # Keras's initial state (zeros of state_size) is explicit: the class is a plain traced step.
    compact = re.sub(r"\s+", "", code)
    assert re.search(r"keras_rnn_loop\(self\.minimal,(\w+),\(\1\.new_zeros\(\1\.shape\[0\],4\),\)", compact)


class LNSimpleRNNCell(L.Layer):
    """handson-ml3's layer-normalised cell (chapter 15): Keras's SimpleRNNCell called on one step."""

    def __init__(self, units, activation="tanh", **kwargs):
        super().__init__(**kwargs)
        self.state_size = units
        self.output_size = units
        self.simple_rnn_cell = L.SimpleRNNCell(units, activation=None)
        self.layer_norm = L.LayerNormalization()
        self.activation = keras.activations.get(activation)

    def call(self, inputs, states):
        outputs, new_states = self.simple_rnn_cell(inputs, states)
        norm_outputs = self.activation(self.layer_norm(outputs))
        return norm_outputs, [norm_outputs]


def test_keras_cells_called_on_one_step():
    """SimpleRNNCell/LSTMCell/GRUCell called outside an RNN: explicit cells returning what Keras's do."""
    series = keras.Input((None, 1))
    x = L.RNN(LNSimpleRNNCell(8), return_sequences=True)(series)
    model = keras.Model(series, L.Dense(3)(L.RNN(LNSimpleRNNCell(8), return_sequences=True)(x)))
    inputs = [np.random.default_rng(3).normal(size=(2, 7, 1)).astype("float32")]
    code = unwrap(assert_exact(model, "channels_first", inputs=inputs)[0].code)
    assert "self.simple_rnn_cell = SimpleRNNCellWithActivation(1, 8, activation=nn.Identity())" in code

    steps, h, c = keras.Input((3, 3)), keras.Input((4,)), keras.Input((4,))
    simple, [simple_state] = L.SimpleRNNCell(4, activation="relu")(steps[:, 0], [h])
    lstm, [lstm_h, lstm_c] = L.LSTMCell(4, use_bias=False)(steps[:, 1], [h, c])
    gru, [gru_state] = L.GRUCell(4, reset_after=False)(steps[:, 2], [h])
    model = keras.Model([steps, h, c], [simple, simple_state, lstm, lstm_h, lstm_c, gru, gru_state])
    for fmt in FORMATS:
        code = unwrap(assert_exact(model, fmt)[0].code)
    assert re.search(r"\w+, \w+, \w+ = self\.lstm_cell\(\w+, \w+, \w+\)", code)  # output, h, c


def test_custom_cell_trains_like_keras():
    tokens = keras.Input((6,), dtype="int32")
    embedded = L.Embedding(10, 3, mask_zero=True)(tokens)
    model = keras.Model(tokens, L.Dense(2)(L.RNN(PeepholeLSTMCell(4))(embedded)))
    randomise_weights(model, inputs=[PADDED_IDS])
    module = k2t.convert(model).build().train()
    assert sum(p.numel() for p in module.parameters()) == model.count_params()
    module(torch.from_numpy(PADDED_IDS)).square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())


def test_backward_pass_reaches_every_parameter():
    tokens = keras.Input((6,), dtype="int32")
    embedded = L.Embedding(10, 3, mask_zero=True)(tokens)
    x = L.Bidirectional(L.LSTM(4, return_sequences=True))(embedded)
    x = L.GRU(4, reset_after=False, return_sequences=True)(x)
    x = L.Bidirectional(L.GRU(3), merge_mode="ave")(x)
    model = keras.Model(tokens, L.Dense(2)(x))
    randomise_weights(model, inputs=[PADDED_IDS])
    module = k2t.convert(model).build().train()
    module(torch.from_numpy(PADDED_IDS)).square().sum().backward()
    missing = [name for name, p in module.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    # bias_hh of the torch modules is a real (zero-initialised) parameter: it trains too.
    assert not missing, missing


def test_long_sequence_accumulation():
    """Length 200: round-off accumulates over the steps; recorded, still within 1e-5."""
    x = keras.Input((200, 8))
    model = keras.Model(x, [L.LSTM(16, return_sequences=True)(x), L.GRU(16)(x)])
    inputs = [np.random.default_rng(5).normal(size=(2, 200, 8)).astype("float32")]
    _, error = assert_exact(model, inputs=inputs)
    assert error <= RTOL  # measured ~4e-7 (float32 sums in a different order each step)


@pytest.mark.parametrize("fmt", FORMATS)
def test_time_distributed(fmt):
    frames = keras.Input((4, 6, 6, 2), name="frames")
    features = keras.Input((4, 5), name="features")
    conv = L.TimeDistributed(L.Conv2D(3, 3, activation="relu"), name="conv")(frames)
    pooled = L.TimeDistributed(L.GlobalAveragePooling2D(), name="pool")(conv)
    dense = L.TimeDistributed(L.Dense(3), name="dense")(features)
    frame = keras.Input((6, 6, 2))
    encoded = L.GlobalMaxPooling2D()(L.Conv2D(3, 3, padding="same", activation="relu")(frame))
    frame_encoder = keras.Model(frame, L.Dense(4)(encoded), name="frame_encoder")
    branches = {
        "Conv2D": conv,
        "pooled then LSTM": L.LSTM(3, name="lstm")(pooled),
        "Dense": dense,
        "BatchNormalization": L.TimeDistributed(L.BatchNormalization(), name="norm")(features),
        "nested model": L.TimeDistributed(frame_encoder, name="encoded")(frames),
    }
    conversion = assert_branches_exact([frames, features], branches, fmt)
    assert "class FrameEncoderStep(nn.Module):" in conversion.code  # the nested model's own class


def test_compare_shows_recurrent_layers():
    tokens = keras.Input((6,), dtype="int32")
    embedded = L.Embedding(10, 3, mask_zero=True)(tokens)
    x = L.Bidirectional(L.LSTM(4, return_sequences=True))(embedded)
    x = L.RNN(PeepholeLSTMCell(3), return_sequences=True, name="custom_cell")(x)  # traced
    model = keras.Model(tokens, L.Dense(2)(L.GRU(3)(x)))
    randomise_weights(model, inputs=[PADDED_IDS])
    conversion = k2t.convert(model)
    comparison = k2t.compare(model, conversion, inputs=[PADDED_IDS])
    assert comparison.ok, comparison
    assert "custom_cell" in [layer.keras_layer for layer in comparison.layers]


@pytest.mark.parametrize("fmt", FORMATS)
def test_conv_lstm(fmt):
    video = keras.Input((3, 7, 7, 2), name="video")
    steps = keras.Input((4, 8, 3), name="steps")
    volume = keras.Input((2, 4, 4, 4, 1), name="volume")
    first = keras.Input((3, 2, 6, 5), name="channels_first_video")
    branches = {
        "2D same sequences": L.ConvLSTM2D(3, 3, padding="same", return_sequences=True)(video),
        "2D valid strides": L.ConvLSTM2D(3, 2, strides=2)(video),
        "2D same strides": L.ConvLSTM2D(2, 3, strides=2, padding="same")(video),
        "2D dilated backwards output, h, c": L.ConvLSTM2D(
            2, 3, padding="same", dilation_rate=2, return_state=True, go_backwards=True
        )(video),
        "1D same even kernel": L.ConvLSTM1D(2, 2, padding="same", return_sequences=True)(steps),
        "1D relu no bias": L.ConvLSTM1D(2, 3, activation="relu", use_bias=False)(steps),
        "3D valid": L.ConvLSTM3D(2, 2)(volume),
        "2D data_format channels_first": L.ConvLSTM2D(2, 3, data_format="channels_first")(first),
    }
    code = unwrap(assert_branches_exact([video, steps, volume, first], branches, fmt).code)
    assert 'nn.Conv2d(2, 8, kernel_size=3, padding="same", bias=False)' in code  # recurrent conv
    assert "class ConvLSTMCell(nn.Module):" in code


def test_conv_lstm_uneven_same_padding_is_refused():
    video = keras.Input((3, 6, 6, 2))
    model = keras.Model(video, L.ConvLSTM2D(2, 3, strides=2, padding="same", name="uneven")(video))
    with pytest.raises(k2t.ConversionError, match=r"'uneven' \(ConvLSTM2D\): padding='same' at strides"):
        k2t.convert(model)


def test_pretrained_embedding_matrix_feeds_lstm():
    """DLwP's GloVe classifier: Embedding(embeddings_initializer=Constant(matrix), mask_zero=True)."""
    matrix = np.random.default_rng(4).normal(size=(10, 3)).astype("float32")
    tokens = keras.Input((6,), dtype="int64")
    embedded = L.Embedding(
        10, 3, embeddings_initializer=keras.initializers.Constant(matrix), trainable=False, mask_zero=True
    )(tokens)
    model = keras.Model(tokens, L.Dense(1)(L.Bidirectional(L.LSTM(4))(embedded)))
    conversion, _ = assert_exact(model, inputs=[PADDED_IDS.astype("int64")])
    assert "Keras Constant initialiser with an array: loaded, not re-initialised" in unwrap(conversion.code)
