"""``compare(model, conversion_or_module)``: every layer of a Keras model against its PyTorch port.

How it runs
-----------
Both models see the same input once. The PyTorch side runs one forward pass: for a
:class:`~kerastorch_magic.conversion.Conversion` through ``conversion.build_traced`` (the generated
``forward`` calls a tap after every Keras layer's output), for any other ``nn.Module`` through
forward hooks on the submodules named in ``mapping``. Each tap advances the Keras side just far
enough to have the matching layer output, compares the two on the torch device and keeps only
numbers, a histogram and small previews.

The Keras side runs the flattened graph (:func:`kerastorch_magic.graph.read_model`, nested models
inlined) layer by layer, eagerly, once, in topological order, exactly as ``Functional.call`` does
(same call arguments, ``training=False``), without touching the user's model. We do not build a
multi-output ``keras.Model(model.inputs, [every layer output])``: it would hold all 1,000+
activations of a large model at once (several times the memory of a forward pass) and cannot
reach tensors inside nested models. Stepping in lock-step with the taps keeps every activation
alive only until its consumers ran and it was compared, so a comparison needs about the memory of
one Keras forward pass plus one PyTorch forward pass.

Mapping your own module
-----------------------
``compare(model, my_module, mapping={...})`` compares a hand-written port. Keys are Keras layer
names (``"conv2d"``, or ``"encoder/conv2d"`` inside a nested model); values are the dotted names of
submodules as in ``my_module.named_modules()`` (``"features.0"``), ``""`` for the whole module's
output, or a dict ``{"module": name, "transform": fn, "layout": ..., "activation": bool}``, or a
tuple ``(name, fn)``:

* a hook sees the submodule's output; Keras layers often fuse an activation
  (``Conv2D(..., activation="relu")``) that a port applies in ``forward`` (``F.relu(self.conv(x))``),
  so the Keras layer's own activation is applied to the hooked output before comparing, unless the
  submodule is itself an activation or ends with one, or ``activation`` is False, or ``transform``
  is given (``transform`` receives the raw output, e.g. ``lambda t: F.softmax(t, dim=1)``);
* ``layout``: ``"auto"`` (default: channels-first when the torch shape is the Keras shape with the
  channels moved to dim 1, which is how rank ≥ 3 conv outputs are read, else the Keras layout),
  ``"channels_first"``, ``"channels_last"``, ``"channels_first_flatten"`` (a ``torch.flatten`` of a
  channels-first map, compared with a Keras ``Flatten`` of the channels-last one) or a permutation
  ``perm`` with ``torch == keras.permute(perm)``.

Without a mapping, submodules named like the Keras layers (as in the code ``convert`` generates)
are matched by name. The Keras model's outputs are always compared with the module's outputs.
Layers with nothing to compare show as ``skip``.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np

from . import layout, naming, stats
from .graph import read_model
from .ir import Graph, Node

DEFAULT_TOLERANCE = 1e-4
_MISSING = object()


# --------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------
@dataclass
class LayerResult:
    """One Keras layer output and its PyTorch counterpart."""

    index: int
    keras_layer: str
    keras_class: str
    keras_shape: tuple
    torch_module: str
    keras_params: int
    torch_params: int | None
    torch_shape: tuple | None = None
    compared: bool = False
    numbers: stats.Numbers | None = None
    histogram: stats.Histogram | None = None
    preview: stats.Preview | None = None
    note: str = ""
    is_output: bool = False

    @property
    def max_abs_diff(self) -> float:
        return self.numbers.max_abs_diff if self.numbers else math.nan

    @property
    def rel_diff(self) -> float:
        if self.numbers:
            return self.numbers.rel_diff
        return math.inf if self.compared else math.nan

    @property
    def cosine(self) -> float:
        return self.numbers.cosine if self.numbers else math.nan

    def status(self, tolerance: float) -> str:
        if self.compared and self.numbers is None:  # compared, but the shapes did not match
            return "fail"
        return stats.status(self.rel_diff, tolerance, self.compared)


class Comparison:
    """The outcome of :func:`compare`: per-layer statistics, a DataFrame and a notebook widget."""

    def __init__(self, layers: list[LayerResult], tolerance: float, info: dict):
        self.layers = layers
        self.tolerance = float(tolerance)
        self.info = info
        self._widget = None

    # -- verdicts ---------------------------------------------------------------------------------
    @property
    def error(self) -> str | None:
        """Why the PyTorch forward pass stopped early (None when it ran through)."""
        return self.info.get("error")

    def status(self, index: int) -> str:
        return self.layers[index].status(self.tolerance)

    @property
    def compared(self) -> list[LayerResult]:
        return [layer for layer in self.layers if layer.compared]

    @property
    def ok(self) -> bool:
        """Every compared layer within tolerance, at least one compared, and no forward error."""
        return (
            self.error is None
            and bool(self.compared)
            and all(layer.status(self.tolerance) != "fail" for layer in self.layers)
        )

    @property
    def failures(self) -> list[LayerResult]:
        return [layer for layer in self.layers if layer.status(self.tolerance) == "fail"]

    @property
    def first_failure(self) -> LayerResult | None:
        """The first layer (in forward order) beyond tolerance: where the two models part."""
        failures = self.failures
        return failures[0] if failures else None

    @property
    def max_rel_diff(self) -> float:
        values = [layer.rel_diff for layer in self.compared]
        return max(values) if values else math.nan

    # -- tables -----------------------------------------------------------------------------------
    def to_dataframe(self):
        """One row per Keras layer output, in forward order (pandas DataFrame)."""
        import pandas as pd

        records = []
        for layer in self.layers:
            numbers = layer.numbers
            records.append(
                {
                    "index": layer.index,
                    "keras_layer": layer.keras_layer,
                    "keras_class": layer.keras_class,
                    "keras_shape": layer.keras_shape,
                    "torch_module": layer.torch_module,
                    "torch_shape": layer.torch_shape,
                    "keras_params": layer.keras_params,
                    "torch_params": layer.torch_params,
                    "max_abs_diff": layer.max_abs_diff,
                    "rel_diff": layer.rel_diff,
                    "cosine": layer.cosine,
                    "status": layer.status(self.tolerance),
                    "keras_mean": numbers.keras_mean if numbers else math.nan,
                    "keras_std": numbers.keras_std if numbers else math.nan,
                    "torch_mean": numbers.torch_mean if numbers else math.nan,
                    "torch_std": numbers.torch_std if numbers else math.nan,
                    "note": layer.note,
                }
            )
        frame = pd.DataFrame.from_records(records)
        if len(frame):
            frame["torch_params"] = frame["torch_params"].astype("Int64")
        return frame.set_index("index", drop=False) if len(frame) else frame

    def summary(self) -> str:
        """One line: the verdict."""
        total, compared = len(self.layers), len(self.compared)
        if self.error:
            return f"PyTorch forward failed: {self.error}"
        if not compared:
            return f"nothing compared: none of the {total} Keras layer outputs had a PyTorch counterpart"
        first = self.first_failure
        if first is None:
            warned = sum(layer.status(self.tolerance) == "warn" for layer in self.layers)
            text = f"all {compared} compared layer outputs match within {self.tolerance:g}"
            text += f" (max relative error {self.max_rel_diff:.2g})"
            if warned:
                text += f"; {warned} close to the tolerance"
            return text
        text = (
            f"{len(self.failures)} of {compared} layer outputs differ beyond {self.tolerance:g}; "
            f"first: {first.keras_layer!r} ({first.keras_class}), relative error "
            f"{first.rel_diff:.3g}"
        )
        drifting = first.rel_diff < 10 * self.tolerance and len(self.failures) >= 10
        if not self.info.get("isolate") and drifting:
            text += " (if errors grow gradually with depth, isolate=True shows each layer's own error)"
        return text

    def __repr__(self) -> str:
        names = f"Keras {self.info.get('model_name')!r} and {self.info.get('torch_name')}"
        return f"<Comparison of {names}: {self.summary()}>"

    # -- display ----------------------------------------------------------------------------------
    def widget(self):
        """The interactive view (an anywidget), created once."""
        if self._widget is None:
            from .widget import ComparisonWidget

            self._widget = ComparisonWidget(self)
        return self._widget

    def to_html(self) -> str:
        """A static HTML table with small thumbnails (HTML exports, nbclient outputs)."""
        from .widget.html import comparison_html

        return comparison_html(self)

    def _repr_mimebundle_(self, include=None, exclude=None):
        bundle = {"text/plain": repr(self), "text/html": self.to_html()}
        try:
            widget_bundle = self.widget()._repr_mimebundle_()
        except Exception:  # no widget support (plain Python): the static table still shows
            widget_bundle = None
        if isinstance(widget_bundle, tuple):
            widget_bundle = widget_bundle[0]
        if widget_bundle and "application/vnd.jupyter.widget-view+json" in widget_bundle:
            bundle["application/vnd.jupyter.widget-view+json"] = widget_bundle[
                "application/vnd.jupyter.widget-view+json"
            ]
        return bundle


# --------------------------------------------------------------------------------------------------
# compare()
# --------------------------------------------------------------------------------------------------
def compare(
    model,
    conversion_or_module,
    inputs=None,
    device=None,
    mapping: dict | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    *,
    input_format: str | None = None,
    batch_size: int = 2,
    seed: int = 0,
    isolate: bool = False,
) -> Comparison:
    """Run ``model`` (Keras) and its PyTorch port on the same input; compare every layer's output.

    ``conversion_or_module``: a :class:`~kerastorch_magic.Conversion` (from :func:`convert`) or any
    ``torch.nn.Module`` (with ``mapping``: see this module's docstring). ``inputs``: array(s) in
    Keras layout (one per model input; a dict by input name works too); None draws seeded random
    data (normal floats; integer ids below the vocabulary size of an ``Embedding`` they feed).
    ``device``: where PyTorch runs and the statistics are computed: None picks cuda, then mps,
    then cpu (a module of yours stays on its own device); Keras uses its default device.
    ``tolerance``: relative error (max|Δ| / max|Keras|) above which a layer fails; within it
    but above a tenth of it, a layer warns. ``input_format`` (own modules only): whether the module
    takes ``"channels_first"`` or ``"channels_last"`` images; None tries channels-first, then the
    Keras layout. ``isolate``: feed every PyTorch layer Keras's own output of the layer before (the
    tap overwrites the PyTorch activation once compared), so each row shows that layer's own error
    instead of the error accumulated since the input; deep untrained networks amplify float32
    round-off until whole stages disagree, and this tells such drift from a wrong layer.
    """
    import torch

    from .conversion import Conversion

    started = time.perf_counter()
    graph = read_model(model)
    arrays, description = _prepare_inputs(graph, inputs, batch_size, seed)
    if isinstance(conversion_or_module, Conversion):
        if mapping:
            raise ValueError("mapping is for your own nn.Module; a Conversion knows its layers already")
        plans = [_ConversionPlan(conversion_or_module, graph, _resolve_device(device))]
        torch_name = f"{conversion_or_module.class_name} (generated)"
    elif isinstance(conversion_or_module, torch.nn.Module):
        module = conversion_or_module
        plans = [
            _ModulePlan(module, graph, mapping, _module_device(module, device), fmt)
            for fmt in _input_formats(graph, input_format)
        ]
        torch_name = type(module).__name__
    else:
        raise TypeError(
            "compare() takes a Conversion (kerastorch_magic.convert(model)) or a torch.nn.Module, "
            f"not {type(conversion_or_module).__name__}"
        )
    best = None
    with _full_float32() as tf32:
        for plan in plans:
            run = _Run(graph, plan, arrays, isolate)
            run.execute()
            if best is None or run.score() > best.score():
                best = run
            if run.error is None:
                break
    info = {
        "model_name": model.name,
        "torch_name": torch_name,
        "torch_device": _device_name(best.plan.device),
        "keras_device": best.keras.device_name(),
        "input": description,
        "input_format": best.plan.input_format,
        "error": best.error,
        "seconds": {**best.seconds, "total": time.perf_counter() - started},
        "code": getattr(conversion_or_module, "code", None),
        "kind": "conversion" if isinstance(conversion_or_module, Conversion) else "module",
        "isolate": bool(isolate),
        "tf32_disabled": tf32,
    }
    return Comparison(best.layers, tolerance, info)


@contextlib.contextmanager
def _single_thread_on_cpu(device):
    """Statistics on the CPU run on one thread: they are small memory-bound reductions, and
    between TensorFlow's and torch's thread pools (or on a busy machine) OpenMP barriers cost
    far more than they save (10x measured on 2 cores)."""
    import torch

    if device.type != "cpu" or torch.get_num_threads() == 1:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def _full_float32():
    """TF32 off while comparing (torch and TensorFlow), restored after; yields whether it was on.

    On Ampere and newer GPUs both frameworks run float32 convolutions in TF32 by default (10-bit
    mantissa, relative errors near 1e-3): that would drown the port's own differences.
    """
    import torch

    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    was_on = any(saved) and torch.cuda.is_available()
    tf = sys.modules.get("tensorflow")
    tf_saved = None
    try:
        if tf is not None and tf.config.list_logical_devices("GPU"):
            tf_saved = tf.config.experimental.tensor_float_32_execution_enabled()
            was_on = was_on or tf_saved
            tf.config.experimental.enable_tensor_float_32_execution(False)
    except Exception:  # an unusual TensorFlow build: leave it alone
        tf_saved = None
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield was_on
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
        if tf_saved is not None:
            tf.config.experimental.enable_tensor_float_32_execution(tf_saved)


# --------------------------------------------------------------------------------------------------
# Inputs and devices
# --------------------------------------------------------------------------------------------------
def _prepare_inputs(graph: Graph, inputs, batch_size: int, seed: int):
    """Keras-layout numpy arrays for each model input, and a description for the header."""
    if inputs is None:
        rng = np.random.default_rng(seed)
        arrays = []
        vocab = _embedding_sizes(graph)
        for value in graph.inputs:
            shape = (batch_size, *(64 if d is None else d for d in value.shape[1:]))
            dtype = np.dtype(value.dtype if value.dtype != "string" else "float32")
            if np.issubdtype(dtype, np.integer):
                arrays.append(rng.integers(0, vocab.get(id(value), 10), shape).astype(dtype))
            elif dtype == np.bool_:
                arrays.append(rng.random(shape) < 0.5)
            else:
                arrays.append(rng.standard_normal(shape).astype(dtype))
        what = f"random normal data (seed {seed}), batch {batch_size}"
    else:
        arrays = _user_arrays(graph, inputs)
        what = "your input"
    shapes = "; ".join(f"{value.name} {tuple(a.shape)} {a.dtype}" for value, a in zip(graph.inputs, arrays))
    return arrays, f"{what}: {shapes}"


def _embedding_sizes(graph: Graph) -> dict[int, int]:
    """id(model input) -> the smallest ``input_dim`` of an Embedding it feeds directly."""
    sizes: dict[int, int] = {}
    consumers = graph.consumers()
    for value in graph.inputs:
        for node in consumers.get(id(value), []):
            dim = getattr(node.layer, "input_dim", None)
            if node.class_name == "Embedding" and dim:
                sizes[id(value)] = min(sizes.get(id(value), dim), int(dim))
    return sizes


def _to_numpy(array) -> np.ndarray:
    if hasattr(array, "detach"):  # torch
        return array.detach().cpu().numpy()
    return np.asarray(array)


def _user_arrays(graph: Graph, inputs) -> list[np.ndarray]:
    names = [value.name for value in graph.inputs]
    if isinstance(inputs, dict):
        missing = [name for name in names if name not in inputs]
        if missing:
            raise ValueError(f"inputs is missing {missing}; the model's inputs are {names}")
        inputs = [inputs[name] for name in names]
    elif not isinstance(inputs, (list, tuple)):
        inputs = [inputs]
    if len(inputs) != len(graph.inputs):
        raise ValueError(f"the model takes {len(graph.inputs)} input(s) {names}, got {len(inputs)}")
    arrays = []
    for value, array in zip(graph.inputs, inputs):
        array = _to_numpy(array)
        if array.dtype == np.float64 and value.dtype == "float32":
            array = array.astype(np.float32)
        expected = value.shape
        fits = len(array.shape) == len(expected) and all(
            want is None or want == got for want, got in zip(expected, array.shape)
        )
        if not fits:
            shape = "(" + ", ".join("N" if d is None else str(d) for d in expected) + ")"
            raise ValueError(
                f"input {value.name!r} has shape {tuple(array.shape)}; the Keras model takes {shape} "
                "(give inputs in Keras's layout, batch first)"
            )
        arrays.append(array)
    return arrays


def _resolve_device(device):
    import torch

    if device is not None and str(device) != "auto":
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _module_device(module, device):
    if device is not None and str(device) != "auto":
        return _resolve_device(device)
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return _resolve_device(None)


def _device_name(device) -> str:
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)


def _input_formats(graph: Graph, wanted: str | None) -> list[str]:
    if wanted is not None:
        if wanted not in ("channels_first", "channels_last"):
            raise ValueError(f"input_format must be 'channels_first' or 'channels_last', not {wanted!r}")
        return [wanted]
    if any(len(value.shape) >= 3 for value in graph.inputs):
        return ["channels_first", "channels_last"]
    return ["channels_last"]


# --------------------------------------------------------------------------------------------------
# The Keras side: the flattened graph, stepped on demand
# --------------------------------------------------------------------------------------------------
class _KerasStepper:
    """Runs the graph's nodes eagerly, once each, in order, as far as the taps need.

    A value is dropped as soon as every node reading it ran and no pending comparison wants it.
    """

    def __init__(self, graph: Graph, arrays: list[np.ndarray], wanted: set[int]):
        import keras

        self.graph = graph
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
        try:
            outputs = operation(*args, **kwargs)
        except Exception as error:
            raise RuntimeError(f"running Keras layer {node.qualified_name!r} failed: {error}") from error
        import keras

        flat = keras.tree.flatten(outputs)
        if self._device is None and flat:
            self._device = _keras_device(flat[0])
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
        import keras

        return f"{keras.backend.backend()} · {self._device or 'default device'}"


def _keras_device(tensor) -> str:
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


def _keras_to_torch(value, device):
    """A Keras output as a torch tensor on ``device`` (zero-copy where the frameworks allow)."""
    import torch

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


# --------------------------------------------------------------------------------------------------
# The PyTorch side: plans (how taps reach the rows) and one run
# --------------------------------------------------------------------------------------------------
@dataclass
class _Row:
    index: int
    node: Node
    output_index: int
    torch_module: str = ""
    torch_params: int | None = None
    note: str = ""


class _ConversionPlan:
    """Taps of the generated ``forward``: one per Keras layer output, layouts from the specs."""

    def __init__(self, conversion, graph: Graph, device):
        self.conversion, self.device, self.input_format = conversion, device, conversion.input_format
        order: list = []
        seen: set[int] = set()
        for trace in conversion.traces:
            if id(trace.node) not in seen:
                seen.add(id(trace.node))
                order.append(trace.node)
        if len(order) != len(graph.nodes) or any(a.layer is not b.layer for a, b in zip(order, graph.nodes)):
            raise ValueError(
                f"this conversion ({conversion.class_name} of Keras model {conversion.model_name!r}) was not "
                "made from this model: convert it again"
            )
        ours = {id(a): b for a, b in zip(order, graph.nodes)}
        self.rows = [
            _Row(trace.index, ours[id(trace.node)], trace.output_index, ", ".join(trace.modules))
            for trace in conversion.traces
        ]
        self.specs = [trace.spec for trace in conversion.traces]

    def wanted(self) -> set[int]:
        return set(range(len(self.rows)))

    def torch_inputs(self, arrays):
        return [
            _torch_input(np.transpose(a, spec.perm), self.device)
            for spec, a in zip(self.conversion.inputs, arrays)
        ]

    def run(self, run: _Run, inputs) -> None:
        import torch

        module = self.conversion.build_traced(run.observe_trace, device=self.device)
        for row in self.rows:
            trace = self.conversion.traces[row.index]
            if trace.output_index == 0:
                row.torch_params = sum(_count(getattr(module, name)) for name in trace.modules)
        with torch.no_grad():
            module(*inputs)

    def align(self, row_index: int, tensor, keras_shape):
        spec = self.specs[row_index]
        return _align_spec(tensor, spec)

    def force(self, row_index: int, tensor, keras_tensor):
        """Overwrite the generated forward's tensor with Keras's values (in place)."""
        spec = self.specs[row_index]
        target = keras_tensor.permute(*spec.perm) if not layout.is_identity(spec.perm) else keras_tensor
        if spec.flat_order is not None:
            target = target.index_select(1, torch_index(spec.flat_order, target.device))
        try:
            tensor.copy_(target)
        except RuntimeError as error:  # e.g. a broadcast view that cannot be written
            return None, f"not isolated ({error})"
        return None, ""


class _ModulePlan:
    """Forward hooks on a user's module, rows mapped by ``mapping`` (or matching names)."""

    def __init__(self, module, graph: Graph, mapping, device, input_format: str):
        import torch

        self.module, self.graph, self.device, self.input_format = module, graph, device, input_format
        self.rows = [_Row(0, node, index) for node in graph.nodes for index in range(len(node.outputs))]
        for position, row in enumerate(self.rows):
            row.index = position
        self.stepper_shapes: dict[int, tuple] = {}  # the Keras stepper's actual shapes, set per run
        self.taps: dict[int, _TapSpec] = {}  # row index -> how to read it
        named = dict(module.named_modules())
        by_name = self._rows_by_name()
        if mapping:
            unknown = []
            for key, value in mapping.items():
                rows = by_name.get(key)
                if rows is None:
                    unknown.append(key)
                    continue
                if isinstance(value, torch.nn.Module):
                    value = next((n for n, m in named.items() if m is value), value)
                tap = _TapSpec.parse(value)
                if tap.module not in named:
                    raise ValueError(
                        f"mapping[{key!r}]: the module has no submodule {tap.module!r} (see named_modules())"
                    )
                for row in rows:
                    self.taps[row.index] = tap
            if unknown:
                layers = sorted({row.node.qualified_name for row in self.rows})
                raise ValueError(f"mapping names unknown Keras layer(s) {unknown}; the model has {layers}")
        else:
            for row in self.rows:
                if row.output_index:
                    continue
                for candidate in _candidate_names(row.node):
                    if candidate in named and candidate:
                        self.taps[row.index] = _TapSpec(candidate)
                        break
        outputs = {id(v): i for i, v in enumerate(graph.outputs)}
        for row in self.rows:
            position = outputs.get(id(row.node.outputs[row.output_index]))
            if position is not None and row.index not in self.taps:
                self.taps[row.index] = _TapSpec("", output=position)
        self.output_rows: dict[int, int] = {}  # row index -> position in the module's outputs
        for index, tap in self.taps.items():
            if not tap.module:
                row = self.rows[index]
                position = outputs.get(id(row.node.outputs[row.output_index]), 0)
                self.output_rows[index] = tap.output if tap.output is not None else position
        for row in self.rows:
            tap = self.taps.get(row.index)
            if tap is None:
                row.torch_module = ""
                row.note = "not mapped to a PyTorch submodule"
                continue
            row.torch_module = tap.module if tap.module else "(module output)"
            if tap.module and row.output_index == 0:
                row.torch_params = _count(named[tap.module])
            tap.activation_fn, tap.activation_note = _fused_activation(row.node, tap, named.get(tap.module))

    def _rows_by_name(self) -> dict[str, list[_Row]]:
        found: dict[str, list[_Row]] = {}
        for row in self.rows:
            for name in {row.node.qualified_name, row.node.layer.name}:
                found.setdefault(name, []).append(row)
        return found

    def wanted(self) -> set[int]:
        return set(self.taps)

    def torch_inputs(self, arrays):
        tensors = []
        for array in arrays:
            if self.input_format == "channels_first" and array.ndim >= 3 and array.dtype.kind == "f":
                array = np.transpose(array, layout.channels_first(array.ndim))
            tensors.append(_torch_input(array, self.device))
        return tensors

    def run(self, run: _Run, inputs) -> None:
        import torch

        module = self.module
        by_module: dict[str, dict[int, list[int]]] = {}  # submodule -> {id(node): row indices}
        for index in sorted(self.taps):
            tap = self.taps[index]
            if tap.module:
                by_module.setdefault(tap.module, {}).setdefault(id(self.rows[index].node), []).append(index)
        named = dict(module.named_modules())
        handles = []
        original_device = _module_device(module, None)
        was_training = module.training

        def hook_for(calls: list[list[int]]):
            count = [0]

            def hook(_module, _args, output):
                # The k-th call of a submodule stands for the k-th call of its Keras layer.
                replacement = None
                if count[0] < len(calls):
                    rows = calls[count[0]]
                    for row_index in rows:
                        forced = run.observe_row(row_index, _pick(output, self.rows[row_index].output_index))
                        if len(rows) == 1 and isinstance(output, torch.Tensor):
                            replacement = forced
                count[0] += 1
                return replacement  # None keeps the module's own output

            return hook

        try:
            if original_device != self.device:
                module.to(self.device)
            module.eval()
            for name, calls in by_module.items():
                handles.append(named[name].register_forward_hook(hook_for(list(calls.values()))))
            with torch.no_grad():
                result = module(*inputs)
            outputs = list(result) if isinstance(result, (tuple, list)) else [result]
            for row_index, position in sorted(self.output_rows.items()):
                if position < len(outputs):
                    run.observe_row(row_index, outputs[position])
        finally:
            for handle in handles:
                handle.remove()
            module.train(was_training)
            if original_device != self.device:
                module.to(original_device)

    def force(self, row_index: int, tensor, keras_tensor):
        """A replacement output for the hooked submodule: Keras's values in the module's layout."""
        import torch

        tap = self.taps[row_index]
        if not tap.module:
            return None, ""  # the module's own output: nothing runs after it
        if tap.transform is not None or tap.activation_fn is not None:
            return None, "not isolated: compared after a transform, which cannot be undone"
        if not isinstance(tensor, torch.Tensor):
            return None, "not isolated: the submodule's output is not a tensor"
        shape, keras_shape = tuple(tensor.shape), tuple(keras_tensor.shape)
        rank = len(keras_shape)
        if isinstance(tap.layout, (tuple, list)):
            target = keras_tensor.permute(*tap.layout)
        elif (
            tap.layout in ("auto", "channels_first")
            and rank >= 3
            and shape == tuple(keras_shape[a] for a in layout.channels_first(rank))
        ):
            target = keras_tensor.permute(*layout.channels_first(rank))
        elif shape == keras_shape or tensor.numel() == keras_tensor.numel():
            target = keras_tensor.reshape(shape)
        else:
            return None, "not isolated: layout unknown"
        return target.to(tensor.dtype).contiguous(), ""

    def align(self, row_index: int, tensor, keras_shape):
        tap = self.taps[row_index]
        if tap.transform is not None:
            tensor = tap.transform(tensor)
        aligned = _align_auto(tensor, keras_shape, tap.layout, self.rows[row_index].node, self.stepper_shapes)
        if aligned is not None and tap.activation_fn is not None:
            aligned = tap.activation_fn(aligned)
        return aligned


@dataclass
class _TapSpec:
    module: str
    transform: object = None
    layout: object = "auto"
    activation: bool = True
    output: int | None = None
    activation_fn: object = None
    activation_note: str = ""

    @classmethod
    def parse(cls, value) -> _TapSpec:
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
            return cls(value[0], transform=value[1])
        if isinstance(value, dict) and isinstance(value.get("module"), str):
            unknown = set(value) - {"module", "transform", "layout", "activation"}
            if unknown:
                raise ValueError(f"unknown mapping keys {sorted(unknown)}")
            return cls(
                value["module"],
                transform=value.get("transform"),
                layout=value.get("layout", "auto"),
                activation=bool(value.get("activation", True)),
            )
        raise ValueError(
            "mapping values are a submodule name, (name, transform) or "
            f"{{'module': name, 'transform': fn, 'layout': ..., 'activation': bool}}; got {value!r}"
        )


def _candidate_names(node: Node) -> list[str]:
    names = [naming.identifier("_".join((*node.scope, node.layer.name)))]
    if node.scope:
        names.append(".".join(naming.identifier(part) for part in (*node.scope, node.layer.name)))
    return names


def _pick(output, index: int):
    import torch

    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        if index < len(output) and isinstance(output[index], torch.Tensor):
            return output[index]
        for item in output:
            if isinstance(item, torch.Tensor):
                return item
    return output


def _count(module) -> int:
    """Parameters plus floating-point buffers (Keras counts BatchNorm statistics as weights)."""
    total = sum(p.numel() for p in module.parameters())
    total += sum(b.numel() for b in module.buffers() if b.is_floating_point())
    return int(total)


def _torch_input(array: np.ndarray, device):
    import torch

    array = np.ascontiguousarray(array)
    tensor = torch.from_numpy(array.astype(np.int64) if array.dtype.kind in "iu" else array)
    return tensor.to(device)


def torch_index(order, device):
    import torch

    return torch.as_tensor(np.asarray(order), device=device)


def _align_spec(tensor, spec):
    """The torch tensor of a generated forward, re-laid in Keras's layout (a view when possible)."""
    import torch

    if spec.flat_order is not None:
        inverse = torch.as_tensor(np.argsort(spec.flat_order), device=tensor.device)
        tensor = tensor.index_select(1, inverse)
    if not layout.is_identity(spec.perm):
        tensor = tensor.permute(*np.argsort(spec.perm).tolist())
    return tensor


def _align_auto(tensor, keras_shape: tuple, wanted, node: Node, shapes: dict):
    """A hooked tensor in Keras's layout, or None when its shape cannot be lined up."""
    import torch

    if not isinstance(tensor, torch.Tensor):
        return None
    shape, rank = tuple(tensor.shape), len(keras_shape)
    if isinstance(wanted, (tuple, list)):
        perm = tuple(wanted)
        if sorted(perm) != list(range(rank)) or shape != tuple(keras_shape[a] for a in perm):
            return None
        return tensor.permute(*np.argsort(perm).tolist())
    channels_first = layout.channels_first(rank)
    cf_shape = tuple(keras_shape[a] for a in channels_first)
    if wanted == "channels_first_flatten":
        source = shapes.get(id(node.inputs[0])) if node.inputs else None
        if source is None or len(source) < 3 or tensor.dim() != 2 or tensor.numel() != math.prod(keras_shape):
            return None
        cf = tuple(source[a] for a in layout.channels_first(len(source)))
        return (
            tensor.reshape(cf)
            .permute(*np.argsort(layout.channels_first(len(source))).tolist())
            .reshape(keras_shape)
        )
    if wanted == "channels_first":
        return tensor.permute(*np.argsort(channels_first).tolist()) if shape == cf_shape else None
    if wanted == "channels_last":
        return tensor if shape == tuple(keras_shape) else None
    if wanted not in ("auto", None):
        raise ValueError(f"unknown layout {wanted!r}")
    if rank >= 3 and shape == cf_shape:
        return tensor.permute(*np.argsort(channels_first).tolist())
    if shape == tuple(keras_shape):
        return tensor
    squeezed = [d for d in shape if d != 1]
    if squeezed == [d for d in keras_shape if d != 1] and tensor.numel() == math.prod(keras_shape):
        return tensor.reshape(keras_shape)  # e.g. (N, C, 1, 1) against (N, C)
    return None


# Keras activation name -> torch function on a Keras-layout tensor.
def _torch_activation(name: str):
    import torch
    import torch.nn.functional as F

    table = {
        "linear": None,
        "relu": F.relu,
        "relu6": F.relu6,
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "softmax": lambda t: F.softmax(t, dim=-1),
        "log_softmax": lambda t: F.log_softmax(t, dim=-1),
        "elu": F.elu,
        "selu": F.selu,
        "gelu": F.gelu,
        "silu": F.silu,
        "swish": F.silu,
        "softplus": F.softplus,
        "softsign": F.softsign,
        "exponential": torch.exp,
        "leaky_relu": lambda t: F.leaky_relu(t, 0.2),
        "hard_sigmoid": F.hardsigmoid,
        "hard_silu": F.hardswish,
        "hard_swish": F.hardswish,
        "mish": F.mish,
    }
    return table.get(name, _MISSING)


def _fused_activation(node: Node, tap: _TapSpec, submodule):
    """The Keras layer's own activation, to apply to a hooked submodule's output (or None)."""
    activation = getattr(node.layer, "activation", None)
    if activation is None or not tap.module or tap.transform is not None or not tap.activation:
        return None, ""
    if node.class_name in ("Activation", "ReLU", "Softmax", "LeakyReLU", "ELU", "PReLU"):
        return None, ""
    name = getattr(activation, "__name__", None) or str(activation)
    if name == "linear":
        return None, ""
    if submodule is not None and _ends_with_activation(submodule):
        return None, ""
    function = _torch_activation(name)
    if function is _MISSING:
        return None, (
            f"Keras applies activation {name!r} inside this layer; give a transform in the mapping "
            "to apply it to the hooked output"
        )
    return function, f"compared after applying Keras's fused activation {name!r} to the hooked output"


def _ends_with_activation(module) -> bool:
    import torch

    last = module
    while isinstance(last, torch.nn.Sequential) and len(last):
        last = last[-1]
    return type(last).__module__ == "torch.nn.modules.activation"


@dataclass
class _Observed:
    torch_shape: tuple | None
    numbers: stats.Numbers | None = None
    histogram: stats.Histogram | None = None
    preview: stats.Preview | None = None
    note: str = ""


class _Run:
    """One attempt: a Keras stepper and a PyTorch forward, compared layer by layer."""

    def __init__(self, graph: Graph, plan, arrays, isolate: bool = False):
        self.graph, self.plan, self.arrays, self.isolate = graph, plan, arrays, isolate
        wanted = {id(plan.rows[i].node.outputs[plan.rows[i].output_index]) for i in plan.wanted()}
        self.keras = _KerasStepper(graph, arrays, wanted)
        if isinstance(plan, _ModulePlan):
            plan.stepper_shapes = self.keras.shapes
        self.observed: dict[int, _Observed] = {}
        self.layers: list[LayerResult] = []
        self.error: str | None = None
        self.seconds = {"keras": 0.0, "torch": 0.0, "statistics": 0.0}
        self._stats_seconds = 0.0
        self._last: str | None = None

    def score(self) -> int:
        return len(self.observed) + (10**9 if self.error is None else 0)

    def execute(self) -> None:
        import torch

        plan = self.plan
        inputs = plan.torch_inputs(self.arrays)
        started = time.perf_counter()
        try:
            plan.run(self, inputs)
        except _KerasFailure as failure:  # a Keras error is not the port's fault: raise it
            raise failure.error from failure.error.__cause__
        except Exception as error:  # the PyTorch forward raised: keep what was compared so far
            where = f" (after Keras layer {self._last!r})" if self._last else ""
            self.error = f"{type(error).__name__}: {error}{where}"
        if plan.device.type == "cuda":
            torch.cuda.synchronize(plan.device)
        forward = time.perf_counter() - started
        keras_during_forward = self.keras.seconds
        with torch.no_grad():  # (the torch backend of Keras would record gradients otherwise)
            self.keras.finish()  # the layers no tap asked for: their shapes complete the table
        self.seconds = {
            "keras": self.keras.seconds,
            "torch": max(0.0, forward - keras_during_forward - self._stats_seconds),
            "statistics": self._stats_seconds,
        }
        self.layers = [self._result(row) for row in plan.rows]

    def _result(self, row: _Row) -> LayerResult:
        node = row.node
        value = node.outputs[row.output_index]
        built = getattr(node.layer, "built", False) and hasattr(node.layer, "count_params")
        result = LayerResult(
            index=row.index,
            keras_layer=node.qualified_name,
            keras_class=node.class_name,
            keras_shape=self.keras.shapes.get(id(value), tuple(value.shape)),
            torch_module=row.torch_module,
            keras_params=int(node.layer.count_params()) if built and row.output_index == 0 else 0,
            torch_params=row.torch_params,
            note=row.note,
            is_output=any(value is output for output in self.graph.outputs),
        )
        found = self.observed.get(row.index)
        if found is not None:
            result.compared = True
            result.torch_shape = found.torch_shape
            result.numbers, result.histogram, result.preview = found.numbers, found.histogram, found.preview
            result.note = found.note
        elif row.index in self.plan.wanted():
            if self.error:
                result.note = "not reached: the PyTorch forward stopped before"
            elif isinstance(self.plan, _ModulePlan) and self.plan.taps[row.index].module:
                result.note = f"submodule {self.plan.taps[row.index].module!r} did not run in forward"
            else:
                result.note = "no PyTorch output seen for this layer"
        return result

    # -- taps -------------------------------------------------------------------------------------
    def observe_trace(self, index: int, tensor) -> None:
        self.observe_row(index, tensor)  # isolation writes into the tensor itself

    def observe_row(self, index: int, tensor):
        """Compare one PyTorch output with Keras's; with ``isolate``, returns what should replace it."""
        import torch

        row = self.plan.rows[index]
        try:
            keras_value = self.keras.output(row.node, row.output_index)
        except RuntimeError as error:
            raise _KerasFailure(error) from error
        self._last = row.node.qualified_name
        started = time.perf_counter()
        keras_shape = tuple(int(d) for d in keras_value.shape)
        torch_shape = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else None
        observed = _Observed(torch_shape)
        replacement = None
        try:
            aligned = self.plan.align(index, tensor, keras_shape)
            if aligned is None or tuple(aligned.shape) != keras_shape:
                observed.note = (
                    f"shape mismatch: PyTorch {torch_shape} does not line up with Keras {keras_shape}"
                    if torch_shape is not None
                    else f"the PyTorch output is a {type(tensor).__name__}, not a tensor"
                )
            else:
                keras_tensor = _keras_to_torch(keras_value, aligned.device)
                with _single_thread_on_cpu(aligned.device):
                    summary = stats.layer(keras_tensor, aligned)
                observed.numbers, observed.histogram, observed.preview = summary
                if isinstance(self.plan, _ModulePlan):
                    observed.note = self.plan.taps[index].activation_note
                if self.isolate:
                    replacement, why = self.plan.force(index, tensor, keras_tensor)
                    if why:
                        observed.note = "; ".join(filter(None, (observed.note, why)))
                del keras_tensor, aligned
        finally:
            del keras_value
            self.keras.release(row.node, row.output_index)
            self._stats_seconds += time.perf_counter() - started
        self.observed[index] = observed
        return replacement


class _KerasFailure(Exception):
    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error
