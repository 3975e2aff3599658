"""The Keras side of a comparison: the flattened graph, stepped on demand, activations streamed.

The graph (:func:`kerastorch_magic.graph.read_model`, nested models inlined) runs layer by layer,
eagerly, once, in topological order, exactly as ``Functional.call`` does (same call arguments,
``training=False``), without touching the user's model. A multi-output
``keras.Model(model.inputs, [every layer output])`` would hold all 1,000+ activations of a large
model at once and cannot reach tensors inside nested models; stepping in lock-step with the
PyTorch taps keeps each activation alive only until its readers ran and it was compared.
"""

from __future__ import annotations

import time
from collections import Counter

import keras
import numpy as np
import torch

from ..errors import KerasRunError
from ..ir import Graph, Node
from . import reference64


def _why(error: Exception, layer) -> str:
    """What to do about a Keras failure whose cause is the machine, not the model ('' if unknown)."""
    if "only supports the NHWC tensor format" not in str(error):
        return ""
    # Without oneDNN, TensorFlow's CPU convolution and pooling kernels take channels-last data only;
    # TensorFlow turns oneDNN on by itself only on some (Intel) CPUs.
    if getattr(layer, "data_format", None) == "channels_first":
        cause = "its data_format is 'channels_first'"
    elif keras.config.image_data_format() == "channels_first":
        cause = "keras.config.image_data_format() is 'channels_first', its layers' default"
    else:
        cause = "a layer inside it has data_format='channels_first'"
    return (
        f"\nKeras itself cannot run this layer here: {cause}, which TensorFlow computes on this"
        " CPU only with oneDNN. The conversion does not need Keras to run it; to compare, set"
        " TF_ENABLE_ONEDNN_OPTS=1 in the environment before TensorFlow is imported (restart the"
        " kernel), or compare on a GPU, or with KERAS_BACKEND=torch or jax."
    )


class KerasFailure(Exception):
    """Keras itself failed to run a layer: not the port's fault, so compare() raises it."""

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


class KerasStepper:
    """Runs the graph's nodes eagerly, once each, in order, as far as the taps need.

    A value is dropped as soon as every node reading it ran and no pending comparison wants it.
    """

    def __init__(
        self,
        graph: Graph,
        arrays: list[np.ndarray],
        wanted: set[int],
        keep_inputs_of: set[int] = frozenset(),
    ):
        """``keep_inputs_of``: ids of nodes whose call arguments are kept, until
        :meth:`float64_output` or :meth:`forget_inputs`, for a float64 re-run of that node."""
        self.graph = graph
        self.keep_inputs_of = keep_inputs_of
        self.kept: dict[int, tuple] = {}
        self.values: dict[int, object] = {}
        for value, array in zip(graph.inputs, arrays):
            self.values[id(value)] = keras.ops.convert_to_tensor(array)
        self.uses = Counter(id(v) for node in graph.nodes for v in node.inputs)
        self.wanted = set(wanted)  # ids of values awaiting comparison
        self.position = 0
        self.done: dict[int, int] = {}  # id(node) -> position
        self.shapes: dict[int, tuple] = {}
        self.seconds = 0.0
        self._device = None

    def output(self, node: Node, index: int):
        """The computed value of ``node.outputs[index]`` (runs the graph up to ``node``)."""
        while id(node) not in self.done:
            if self.position >= len(self.graph.nodes):
                raise RuntimeError(f"Keras layer {node.qualified_name!r} is not in the model's graph")
            self._step()
        value = self.values.get(id(node.outputs[index]))
        if value is None:
            raise RuntimeError(f"the output of Keras layer {node.qualified_name!r} was already released")
        return value

    def float64_output(self, node: Node, index: int):
        """Output ``index`` of ``node`` recomputed in float64 on the inputs it ran on (see
        :mod:`.reference64`), or None (inputs not kept, or no faithful float64 re-run)."""
        kept = self.kept.get(id(node))
        return None if kept is None else reference64.output_in_float64(*kept, index)

    def forget_inputs(self, node: Node) -> None:
        self.kept.pop(id(node), None)

    def release(self, node: Node, index: int) -> None:
        key = id(node.outputs[index])
        self.wanted.discard(key)
        self._maybe_free(key)

    def finish(self) -> None:
        while self.position < len(self.graph.nodes):
            self._step()

    def _maybe_free(self, key: int) -> None:
        if self.uses[key] <= 0 and key not in self.wanted:
            self.values.pop(key, None)

    def _step(self) -> None:
        node = self.graph.nodes[self.position]
        started = time.perf_counter()
        keras_node = node.keras_node
        local = {id(t): self.values[id(v)] for t, v in zip(keras_node.input_tensors, node.inputs)}
        args, kwargs = keras_node.arguments.fill_in(local)
        operation = node.layer
        if "training" in getattr(operation, "_call_context_args", ()) or getattr(
            operation, "_call_has_training_arg", False
        ):
            kwargs["training"] = False
        call = _batch_sized(operation, args)
        if id(node) in self.keep_inputs_of:
            self.kept[id(node)] = (call, args, kwargs)
        try:
            outputs = call(*args, **kwargs)
        except Exception as error:
            message = f"running Keras layer {node.qualified_name!r} failed: {error}{_why(error, operation)}"
            raise KerasRunError(message, node.qualified_name) from error
        flat = keras.tree.flatten(outputs)
        if self._device is None and flat:
            self._device = _device_of(flat[0])
        for value, tensor in zip(node.outputs, flat):
            self.values[id(value)] = tensor
            self.shapes[id(value)] = tuple(int(d) for d in tensor.shape)
        self.seconds += time.perf_counter() - started
        self.done[id(node)] = self.position
        self.position += 1
        for value in node.inputs:
            self.uses[id(value)] -= 1
            self._maybe_free(id(value))
        for value in node.outputs:
            self._maybe_free(id(value))

    def device_name(self) -> str:
        return f"{keras.backend.backend()} · {self._device or 'default device'}"


def _batch_sized(operation, args):
    """``operation``, or a reshape to the running batch where tracing recorded the batch as None.

    A traced ``ops.reshape(x, (ops.shape(x)[0], -1, 4))`` (RetinaNet's heads) holds None where
    the batch size goes: Keras cannot run that op again eagerly, the port reads ``x.shape[0]``.
    """
    shape = getattr(operation, "newshape", None)
    if type(operation).__name__ != "Reshape" or not shape or shape[0] is not None or not args:
        return operation
    rest = tuple(shape[1:])
    return lambda x, *more, **options: keras.ops.reshape(x, (x.shape[0], *rest))


def _device_of(tensor) -> str:
    device = getattr(tensor, "device", None)
    if callable(getattr(tensor, "devices", None)):  # jax
        try:
            device = next(iter(tensor.devices()))
        except (StopIteration, TypeError):
            pass
    text = str(device) if device is not None else ""
    if "/device:" in text:  # tensorflow: /job:localhost/replica:0/task:0/device:CPU:0
        text = text.split("/device:")[-1]
    return text or "default device"


def to_torch(value, device: torch.device) -> torch.Tensor:
    """A Keras output as a torch tensor on ``device`` (zero-copy where the frameworks allow)."""
    if isinstance(value, torch.Tensor):  # the torch backend
        return value.detach().to(device)
    if device.type == "cuda" and "GPU" in str(getattr(value, "device", "")):
        try:  # tensorflow on the same GPU: hand the buffer over through DLPack
            import tensorflow as tf

            return torch.utils.dlpack.from_dlpack(tf.experimental.dlpack.to_dlpack(value)).to(device)
        except Exception:  # fall back to the host copy below
            pass
    array = np.asarray(value)
    if not array.flags.writeable:
        array = array.copy()
    return torch.from_numpy(array).to(device, non_blocking=True)
