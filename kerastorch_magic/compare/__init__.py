"""``compare(model, conversion_or_module)``: every layer of a Keras model against its PyTorch port.

How it runs (modules)
---------------------
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
alive only until its readers ran and it was compared, so a comparison needs about the memory of
one Keras forward pass plus one PyTorch forward pass.

Verdicts
--------
Each row is ``ok``, ``warn``, ``fail`` or ``skip`` by its relative error (max|Δ| / max|Keras|)
against ``tolerance``. When rows fail end to end, a drift check runs every layer again on Keras's
own inputs: rows beyond tolerance whose own error, and that of every row upstream, is within it
become ``drift`` (float32 round-off amplified through depth; ``ok`` stays true), the others stay
``fail`` (:mod:`.run`, :mod:`.results`). A layer still beyond it there is measured once more,
against Keras's layer recomputed in float64 (:mod:`.reference64`): where Keras's own float32
result is the rounded one and the port matches float64 Keras, the row is ``drift`` too, its note
says by how much Keras is off. Layers random at inference (a traced layer drawing
``keras.random``, such as a VAE's ``Sampling``) are ``random``: their values are not compared and
the next layers are fed Keras's own draw, so everything after them is compared exactly. A line in
the notebook shows the progress (``progress=``).

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

Modules: :mod:`.results` (``Comparison``, ``LayerResult``, ``RunInfo``, statuses), :mod:`.run`
(``compare()``: devices, TF32, threads, the drift check), :mod:`.plans` (the generated forward and
your module behind one ``Plan`` protocol), :mod:`.mapping` (mapping and aligning your module's
outputs), :mod:`.keras_side` (the Keras stepper), :mod:`.inputs`, :mod:`.progress`.
"""

from .progress import Progress
from .results import STATUSES, Comparison, DriftCheck, LayerResult, RunInfo, Status
from .run import DEFAULT_TOLERANCE, compare

__all__ = [
    "DEFAULT_TOLERANCE",
    "STATUSES",
    "Comparison",
    "DriftCheck",
    "LayerResult",
    "Progress",
    "RunInfo",
    "Status",
    "compare",
]
