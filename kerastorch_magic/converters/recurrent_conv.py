"""ConvLSTM1D/2D/3D: an explicit convolutional LSTM cell stepped by ``keras_rnn_loop``.

Keras's cell: gates i, f, c, o = input convolution (the layer's padding, strides, dilation, with
the bias) + recurrent convolution of the state (always ``"same"``, stride 1, no bias). torch has no
ConvLSTM, so the cell holds two ``nn.ConvNd`` whose 4 * filters output channels are the four
gates in Keras's order. The steps are channels-first images: the layer works on (N, T, C, ...)
whatever the Keras ``data_format``; its outputs stay channels-first ((N, T, F, ...) sequences,
(N, F, ...) states).

The recurrent convolution's ``"same"`` padding at stride 1 is torch's ``padding="same"`` (both put
an odd padding cell after). The input convolution's ``"same"`` at stride > 1 must be symmetric
for the input size (else refused by name).
"""

from __future__ import annotations

import numpy as np

from .. import initializers, layout
from ..registry import Converted, Fragment, LayerCall, Submodule, converter
from ._source import compact
from .padding import same_padding, tuple_of
from .recurrent import _LOOP, _argument, _dropout, _mask, _pass_and_read, _refuse_stateful
from .recurrent_cells import _function

_CELL = '''
class ConvLSTMCell(nn.Module):
    """One Keras ConvLSTM step on channels-first images.

    Gates in Keras's order (input, forget, cell, output), each ``filters`` channels of
    ``input_conv(x) + recurrent_conv(h)``.
    """

    def __init__(self, input_conv, recurrent_conv, activation, recurrent_activation):
        super().__init__()
        self.input_conv, self.recurrent_conv = input_conv, recurrent_conv
        self.activation, self.recurrent_activation = activation, recurrent_activation

    def zero_state(self, x):
        # Keras's initial state: zeros shaped like one gate of the input convolution's output.
        zeros = torch.zeros_like(self.input_conv(x[:, 0]).chunk(4, dim=1)[0])
        return zeros, zeros

    def forward(self, x, h, c):
        z = self.input_conv(x) + self.recurrent_conv(h)
        i, f, g, o = z.chunk(4, dim=1)
        c = self.recurrent_activation(f) * c + self.recurrent_activation(i) * self.activation(g)
        h = self.recurrent_activation(o) * self.activation(c)
        return h, h, c  # the output, then the new state (h, c), as a Keras cell returns them
'''


def _kernel(array: np.ndarray) -> np.ndarray:
    """Keras ``(k..., in, out)`` -> torch ``(out, in, k...)``."""
    rank = array.ndim - 2
    return np.ascontiguousarray(np.transpose(array, (rank + 1, rank, *range(rank))))


@converter("ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D")
def convert_conv_lstm(call: LayerCall) -> Converted:
    layer = call.layer
    _refuse_stateful(call, layer)
    cell = layer.cell
    rank = cell.rank
    channels_last = cell.data_format == "channels_last"
    spec = call.inputs[0]
    # The steps as channels-first images: (N, T, C, spatial...).
    wanted = (0, 1, rank + 2, *range(2, rank + 2)) if channels_last else layout.identity(rank + 3)
    seq = call.input_as(0, wanted)
    spatial = [spec.keras_shape[a] for a in (range(2, rank + 2) if channels_last else range(3, rank + 3))]
    size, strides = tuple_of(cell.kernel_size, rank), tuple_of(cell.strides, rank)
    dilation = tuple_of(cell.dilation_rate, rank)
    kernel, recurrent = (
        _kernel(np.asarray(cell.kernel.numpy())),
        _kernel(np.asarray(cell.recurrent_kernel.numpy())),
    )
    filters = int(cell.filters)
    input_args = [str(kernel.shape[1]), str(4 * filters), f"kernel_size={compact(size)}"]
    if any(s != 1 for s in strides):
        input_args.append(f"stride={compact(strides)}")
    if cell.padding == "same" and all(s == 1 for s in strides):
        input_args.append('padding="same"')  # torch's stride-1 "same": the odd cell after, as TF
    elif cell.padding == "same":
        pads = [same_padding(n, k, s, d) for n, k, s, d in zip(spatial, size, strides, dilation)]
        if any(p is None or p[0] != p[1] for p in pads):
            raise call.unsupported(
                f"padding='same' at strides={strides} pads unevenly (or for an unknown size) here"
            )
        if any(p[0] for p in pads):
            input_args.append(f"padding={compact(tuple(p[0] for p in pads))}")
    if any(d != 1 for d in dilation):
        input_args.append(f"dilation={compact(dilation)}")
    if not cell.use_bias:
        input_args.append("bias=False")
    conv = f"nn.Conv{rank}d"
    recurrent_args = f'{filters}, {4 * filters}, kernel_size={compact(size)}, padding="same", bias=False'
    act, code = _function(call, cell.get_config().get("activation"))
    rec, rec_code = _function(call, cell.get_config().get("recurrent_activation"))
    code += rec_code + Fragment(helpers={"ConvLSTMCell": _CELL, "keras_rnn_loop": _LOOP})
    ctor = (
        f"ConvLSTMCell({conv}({', '.join(input_args)}), {conv}({recurrent_args}), "
        f"activation={act}, recurrent_activation={rec})"
    )
    state = {"input_conv.weight": kernel, "recurrent_conv.weight": recurrent}
    config = cell.get_config()
    init = initializers.init_lines(
        config.get("kernel_initializer"), cell.kernel.shape, kernel.shape, "input_conv.weight"
    )
    init += initializers.init_lines(
        config.get("recurrent_initializer"),
        cell.recurrent_kernel.shape,
        recurrent.shape,
        "recurrent_conv.weight",
    )
    if cell.use_bias:
        state["input_conv.bias"] = np.asarray(cell.bias.numpy())
        init += initializers.init_lines(
            config.get("bias_initializer"), (4 * filters,), (4 * filters,), "input_conv.bias"
        )
        if config.get("unit_forget_bias", False):
            init += initializers.unit_forget_bias_lines("input_conv.bias", filters)
    module = Submodule(
        ctor,
        state,
        init,
        "Keras ConvLSTM kernels as convolutions with 4 * filters outputs (gates i, f, c, o); "
        "the recurrent one pads 'same' at stride 1, as Keras.",
    )
    mask, states = _mask(call), _argument(call, "initial_state")
    dropout, seq = _dropout(call, [cell], seq)
    code += dropout
    if layer.go_backwards:
        seq = f"{seq}.flip(1)"
        mask = None if mask is None else f"{mask}.flip(1)"
    args = ["{m}", seq]
    if states:
        cf = layout.channels_first(rank + 2) if channels_last else layout.identity(rank + 2)
        relaid = [layout.permute_expression(s, call.inputs[int(s[2:-1])].perm, cf) or s for s in states]
        args.append(f"({', '.join(relaid)})")
    if mask is not None:
        args.append(f"mask={mask}")
    loop = f"keras_rnn_loop({', '.join(args)})"
    outputs = ["{r}[0]" if layer.return_sequences else "{r}[0][:, -1]"]
    if layer.return_state:
        outputs += ["{r}[1][0]", "{r}[1][1]"]
    comment = "Keras go_backwards: the sequence is read reversed" if layer.go_backwards else None
    code += _pass_and_read(loop, outputs, comment)
    image = (0, rank + 1, *range(1, rank + 1)) if channels_last else layout.identity(rank + 2)
    sequence = (0, 1, rank + 2, *range(2, rank + 2)) if channels_last else layout.identity(rank + 3)
    specs = [call.output_spec(sequence if layer.return_sequences else image)]
    specs += [call.output_spec(image, i) for i in (1, 2)] if layer.return_state else []
    return Converted.from_fragment(code, specs, {"": module})
