"""What :func:`conversion.convert` returns: the :class:`Conversion`, its notes and layer traces."""

from __future__ import annotations

from dataclasses import dataclass, field

from . import codegen
from .ir import Node, TensorSpec


@dataclass(frozen=True)
class Note:
    """A non-obvious mapping of one layer (also written as a comment in the code)."""

    layer: str
    text: str

    def __str__(self) -> str:
        return f"{self.layer}: {self.text}"


@dataclass(frozen=True)
class LayerTrace:
    """Where one Keras layer call's output lives in the generated ``forward``.

    ``index`` is the argument the traced forward passes to its tap; ``spec`` relates the torch
    tensor to the Keras one (``spec.to_torch_layout(keras_array)`` lines them up).
    """

    index: int
    node: Node
    output_index: int
    spec: TensorSpec
    variable: str
    modules: tuple[str, ...]  # attribute names of the submodules this call used
    # Random at inference (a traced layer drawing keras.random, e.g. a VAE's Sampling): Keras and
    # torch draw different values, so a comparison feeds the next layers Keras's own output.
    random: bool = False
    # Set for a layer fused into the next one (an idiom, a folded BatchNorm: see idioms.py): no
    # output of its own in forward, so compare skips it, saying where its effect is compared.
    fused_into: str = ""

    @property
    def keras_name(self) -> str:
        return self.node.qualified_name


@dataclass
class Conversion:
    """The result of :func:`convert`: generated source, weights, and how the tensors line up.

    Attributes:
        code: the self-contained module source (imports, helpers, the class); compiles on its
            own and never imports this package.
        class_name: the generated class's name.
        state_dict: ``{name: torch.Tensor}`` with the Keras weights re-laid for torch;
            ``load_state_dict(state_dict, strict=True)`` works.
        inputs, outputs: one :class:`~kerastorch_magic.ir.TensorSpec` per model input/output,
            in Keras order; ``spec.perm`` maps the Keras layout to the torch one
            (``torch_array == keras_array.transpose(spec.perm)``).
        notes: the non-obvious mappings, per layer (also comments in ``code``).
        traces: where each Keras layer's output lives in ``forward`` (what ``compare`` reads).
        model_name: the Keras model's name.
        input_format: ``"channels_first"`` or ``"channels_last"``, as requested.
        state_dict_keys: flat key -> key of ``state_dict``. The flat key is the one the
            one-class form (``structure="flat"``) uses, ``<keras layer>.<tensor>``
            (``conv2_block1_1_conv.weight``); with repeated blocks as classes the tensor lives at
            ``conv2.0.conv1.weight``. Identity for the flat form.
        module_paths: flat attribute -> the submodule's dotted path in the generated class
            (``conv2_block1_1_conv`` -> ``conv2.0.conv1``); empty for the flat form. See
            :meth:`submodule_path`.

    Example:
        >>> conv = k2t.convert(model, class_name="Net")  # doctest: +SKIP
        >>> net = conv.build()  # eval mode, Keras weights loaded
    """

    code: str
    class_name: str
    state_dict: dict
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    notes: list[Note]
    traces: list[LayerTrace]
    model_name: str
    input_format: str
    _source: codegen.ClassSource = field(repr=False)
    state_dict_keys: dict = field(default_factory=dict)
    module_paths: dict = field(default_factory=dict)
    _classes: dict = field(default_factory=dict, repr=False)  # source -> its class, run once

    def build(self, device=None):
        """Instantiate the generated class in eval mode with the Keras weights loaded.

        Runs ``self.code`` (once per conversion), builds the class without paying for
        ``reset_parameters()`` and loads copies of ``state_dict`` (strict).

        Args:
            device: a ``torch.device`` or string (``"cpu"``, ``"cuda"``...) for the parameters
                and buffers; None keeps them on the CPU.

        Returns:
            The ``torch.nn.Module``, in eval mode (dropout off, BatchNorm on its moving
            statistics, as Keras's inference). Call ``.train()`` to fine-tune it.

        Example:
            >>> net = k2t.convert(model).build("cuda")  # doctest: +SKIP
            >>> y = net(torch.randn(1, 3, 64, 64, device="cuda"))  # doctest: +SKIP
        """
        return self._instantiate(self.code, device)

    def submodule_path(self, attribute: str) -> str:
        """Where the flat class's submodule ``attribute`` (a ``LayerTrace.modules`` entry, named
        after the Keras layer) lives in the generated class: ``net.get_submodule(path)``."""
        return self.module_paths.get(attribute, attribute)

    def build_traced(self, tap, device=None):
        """Like :meth:`build`, but ``forward`` calls ``tap(trace_index, tensor)`` after each layer.

        The module is built on the meta device and takes this conversion's tensors as its own
        (``assign=True``): no second copy of the weights while comparing. Not for training: its
        parameters are ``self.state_dict``'s tensors.
        """
        # The flat class with taps, whatever the structure of ``code``: compare maps every Keras
        # layer to its own submodule there. Same tensors under their flat keys, no copy.
        flat = {key: self.state_dict[new] for key, new in self.state_dict_keys.items()} or self.state_dict
        module = self._instantiate(codegen.render(self._source, trace=True), device, share=True, state=flat)
        module._tap = tap
        return module

    def _instantiate(self, code: str, device, share: bool = False, state: dict | None = None):
        """Run ``code`` and build its class with this conversion's weights.

        The class is built on the meta device, so ``reset_parameters()`` (Keras's initialisers:
        10-30 s of ``trunc_normal_`` for EfficientNetB7) costs nothing, and the weights are then
        assigned: this conversion's own tensors when ``share`` (comparison), else copies made
        directly on ``device``. A class with state the state_dict does not hold (non-persistent
        buffers) is built the ordinary way instead.
        """
        import torch

        cls = self._classes.get(code)
        if cls is None:  # run the source once per conversion (and per traced variant)
            namespace: dict = {"__name__": f"kerastorch_magic_generated_{self.class_name}"}
            exec(compile(code, f"<generated {self.class_name}>", "exec"), namespace)  # noqa: S102
            cls = self._classes[code] = namespace[self.class_name]
        with torch.device("meta"):
            module = cls()
        source = self.state_dict if state is None else state
        if share:
            state = source
        else:
            state = {
                k: v.to(device, copy=True) if device is not None else v.clone() for k, v in source.items()
            }
        module.load_state_dict(state, strict=True, assign=True)
        if any(t.is_meta for t in (*module.parameters(), *module.buffers())):
            module = cls()
            module.load_state_dict(source, strict=True)
        if device is not None:
            module = module.to(device)
        return module.eval()

    def __repr__(self) -> str:
        return (
            f"<Conversion {self.class_name} of Keras model {self.model_name!r}: "
            f"{len(self.traces)} layer outputs, {len(self.state_dict)} tensors, {len(self.notes)} notes>"
        )
