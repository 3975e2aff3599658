"""``%%keras2torch`` / ``%keras2torch``: run a cell, convert the Keras model it built, write the class.

The magic is a thin shell over the library (DESIGN.md §1): it runs the cell as IPython would,
picks the Keras model the cell created, calls :func:`kerastorch_magic.convert`, shows the
comparison, stores the weights (:mod:`weights`) and hands the generated cell to :mod:`frontend`.
"""

from __future__ import annotations

import ast
import inspect
import linecache
import re
import sys
from dataclasses import dataclass

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from . import devices, frontend, training, weights
from .errors import KerasRunError
from .frontend import INSERT_MODES, FrontendLink
from .layout import INPUT_FORMATS

# Names the generated cell binds or uses at top level: the class and instance must not shadow them.
_CELL_NAMES = {"torch", "nn", "F", "math", "load_file", "globals"}


# -- small pure helpers (unit-testable without a kernel) -------------------------------------------
def instance_name(class_name: str) -> str:
    """The variable the generated cell binds: ``Net`` -> ``net``, ``MyNet`` -> ``my_net``."""
    import keyword

    name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", class_name).lower()
    name = re.sub(r"_+", "_", name).strip("_") or "model"
    if name == class_name or name in _CELL_NAMES or keyword.iskeyword(name) or name[0].isdigit():
        name = f"{name}_model"
    return name


def add_import(code: str, line: str) -> str:
    """``code`` with the third-party import ``line`` added where ``ruff``'s isort puts it."""
    lines = code.split("\n")
    if line in lines:
        return code
    pattern = re.compile(r"^(import|from) ([\w.]+)")
    group = [i for i, text in enumerate(lines) if pattern.match(text) and not text.startswith("import math")]
    if not group:
        return line + "\n" + code

    def key(text: str):
        kind, module = pattern.match(text).groups()
        return (kind == "from", module.lower(), text)

    block = sorted([lines[i] for i in group] + [line], key=key)
    start = group[0]
    return "\n".join(lines[:start] + block + lines[group[-1] + 1 :])


def assignment_order(source: str) -> dict[str, tuple[int, int]]:
    """Name -> position of its last assignment in ``source`` (cell order: line, column)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    order: dict[str, tuple[int, int]] = {}

    def mark(name: str, node) -> None:
        position = (getattr(node, "end_lineno", node.lineno), getattr(node, "end_col_offset", 0))
        if name not in order or position > order[name]:
            order[name] = position

    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            # The statement's end: ``model = build(model)`` binds after its right-hand side.
            mark(node.id, node)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.NamedExpr)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        mark(name.id, node)
    return order


def defined_names(source: str) -> list[str]:
    """Names that ``source`` binds at top level, in order, except by imports (modules stay the
    user's business: the generated cell's ``F`` must not replace a user's own ``F``)."""
    names: list[str] = []
    for node in ast.parse(source).body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            found = [node.name]
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            found = [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
        else:
            continue
        names += [name for name in found if name not in names]
    return names


def _is_keras_model(value) -> bool:
    keras = sys.modules.get("keras")
    if keras is None:
        return False
    try:
        return isinstance(value, keras.Model)
    except Exception:  # noqa: BLE001 - exotic objects with a broken __class__
        return False


def _lookup(user_ns: dict, expression: str):
    """A variable (or dotted attribute path) of the user namespace; KeyError if absent."""
    head, *rest = expression.split(".")
    if not head.isidentifier() or not all(part.isidentifier() for part in rest):
        raise KeyError(expression)
    value = user_ns[head]
    for part in rest:
        try:
            value = getattr(value, part)
        except AttributeError:
            raise KeyError(expression) from None
    return value


def _describe(value) -> str:
    kind = type(value)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module.split('.')[0]}.{kind.__qualname__}"


def _clean_error(error: BaseException) -> BaseException:
    """``error`` displayed as its message only (no frames of this module) when raised to IPython."""
    lines = [f"\x1b[0;31m{type(error).__name__}\x1b[0m: {error}"]
    try:
        error._render_traceback_ = lambda: lines
    except (AttributeError, TypeError):  # pragma: no cover - exceptions without a __dict__
        pass
    return error


@dataclass
class Options:
    class_name: str
    instance: str
    device: str
    weights_path: object  # pathlib.Path | None
    weights_raw: str | None
    insert: str


@dataclass
class Picked:
    model: object
    variable: str
    note: str = ""


def _check_not_replaced(picked: Picked, options: Options) -> None:
    """The class and instance the magic binds must not replace the Keras model it converts."""
    variable = picked.variable.split(".")[0]
    for kind, name in (("class", options.class_name), ("instance", options.instance)):
        if name == variable:
            raise UsageError(
                f"--name {options.class_name}: the generated {kind} {name} would replace the Keras "
                f"model held by {variable}; choose another --name"
            )


# -- the magic --------------------------------------------------------------------------------------
@magics_class
class Keras2TorchMagics(Magics):
    """``%%keras2torch`` and ``%keras2torch``; holds the frontend link of this shell."""

    def __init__(self, shell):
        super().__init__(shell)
        self.link = FrontendLink(shell)
        self.cell_id: str | None = None

    def pre_run_cell(self, info) -> None:
        """``pre_run_cell`` hook: remember the executing cell's id (the upsert's key)."""
        self.cell_id = getattr(info, "cell_id", None)

    @line_cell_magic
    @magic_arguments()
    @argument(
        "variable",
        nargs="?",
        help="Line form: the variable holding the Keras model (%%keras2torch model). "
        "Cell form: same as --model.",
    )
    @argument(
        "--name",
        default="Net",
        help="Class name of the generated nn.Module (default Net). The generated cell binds an "
        "instance named after it in snake case: Net -> net, MyNet -> my_net.",
    )
    @argument(
        "--model",
        metavar="VAR",
        help="Which Keras model to convert when the cell binds several (default: the last one "
        "assigned, in cell order). Any variable holding a keras.Model works, also one the cell "
        "did not touch, and a dotted path (self.model).",
    )
    @argument(
        "--input-format",
        default="channels_first",
        choices=INPUT_FORMATS,
        help="channels_first (default): the module takes and returns idiomatic PyTorch layouts "
        "(N, C, H, W); channels_last: exactly Keras's layouts (N, H, W, C).",
    )
    @argument(
        "--flat",
        action="store_true",
        help="One class holding every layer, as before repeated blocks became classes (the default "
        "writes each structure the model repeats, e.g. a ResNet bottleneck, as one nn.Module class).",
    )
    @argument(
        "--fold-batchnorm",
        action="store_true",
        help="Deployment variant: fold each BatchNormalization that follows a convolution or Dense "
        "layer into its weights (faster; exact in eval mode, not for training).",
    )
    @argument(
        "--input",
        metavar="VAR",
        help="Variable holding sample input for the comparison, as the Keras model takes it "
        "(channels-last; a list for several inputs). Default: seeded random data.",
    )
    @argument(
        "--device",
        default="auto",
        help="Where the PyTorch side of the comparison runs: auto (cuda, else mps, else cpu), cpu, "
        "cuda, cuda:N or mps. The generated cell itself builds the module on the CPU.",
    )
    @argument(
        "--no-compare",
        action="store_true",
        help="Skip the Keras-vs-PyTorch comparison (layer by layer) shown after the conversion.",
    )
    @argument(
        "--weights",
        metavar="PATH",
        help="Write the weights to PATH (.safetensors, or .pt/.pth with torch.save) and make the "
        "generated cell load that file, so it also works after a kernel restart. Default: the "
        'weights stay in this kernel\'s memory, in _keras2torch_weights["<class name>"].',
    )
    @argument(
        "--insert",
        default="auto",
        choices=INSERT_MODES,
        help="How the generated cell gets into the notebook. auto (default): the JupyterLab "
        "extension when it answered (updates the cell in place on re-runs), else IPython's "
        "set_next_input (a new cell below; not repeated while the code is unchanged); comm: the "
        "extension only (an error without it); payload: always set_next_input; none: only shown "
        "in the output (which always carries the code, collapsed).",
    )
    def keras2torch(self, line: str, cell: str | None = None):
        """Convert a Keras model to an exact, readable PyTorch nn.Module, written into a new cell.

        Cell form: ``%%keras2torch [options]`` on top of the cell that builds the model. The cell
        runs exactly as without the magic (its variables stay defined, its outputs and errors show
        as usual); the model converted is the keras.Model that the cell created or rebound (also
        one returned by a builder function and assigned); with several, the last one assigned.

        Line form: ``%keras2torch VAR [options]`` converts the model held by VAR.

        The generated cell holds a marker line, the imports, the class, and the lines creating the
        instance in eval mode with the Keras weights loaded (from kernel memory, or from the
        --weights file). It is standalone PyTorch: it never imports kerastorch_magic. It goes
        below the source cell through the JupyterLab extension or set_next_input (see --insert);
        the output always shows it too, collapsed, followed by the comparison with Keras.

        The magic also runs that code itself: the class and its instance (Net and net) are defined
        when the magic cell finishes, so "Run All" and headless runs (nbconvert, papermill) work
        whether or not the generated cell runs. Running the generated cell defines them again,
        with any edits made there.
        """
        args = parse_argstring(self.keras2torch, line)
        options = self._check_options(args, cell)
        cell_id = self.cell_id
        if cell is None:
            picked = self._named_model(args.model or args.variable)
        else:
            before = dict(self.shell.user_ns)
            if not self._run_user_cell(cell, line, cell_id):
                return None  # the cell's own traceback was shown; nothing else happens
            if args.model or args.variable:
                picked = self._named_model(args.model or args.variable)
            else:
                picked = self._model_from_cell(cell, before)
        _check_not_replaced(picked, options)
        sample = self._sample_input(args.input)
        self._convert_and_write(picked, options, args, sample, cell_id)
        return None

    # -- options ------------------------------------------------------------------------------------
    def _check_options(self, args, cell) -> Options:
        """Every option checked before the cell runs: a bad one changes nothing."""
        from . import naming

        if cell is None and not (args.variable or args.model):
            raise UsageError(
                "%keras2torch needs the variable holding the Keras model: %keras2torch model "
                "(or put %%keras2torch on top of the cell that builds it)"
            )
        if args.variable and args.model and args.variable != args.model:
            raise UsageError(f"two models named: {args.variable!r} and --model {args.model!r}; give one")
        try:
            class_name = naming.class_identifier(args.name)
        except ValueError as error:
            raise UsageError(f"--name: {error}") from None
        if class_name in _CELL_NAMES or class_name == weights.STORE_NAME:
            raise UsageError(f"--name {class_name!r} would shadow a name the generated cell uses")
        device = self._check_device(args.device)
        path = None
        try:
            if args.weights:
                path = weights.check_writable(args.weights)
            else:
                weights.check_in_memory(self.shell.user_ns)
        except weights.WeightsPathError as error:
            raise UsageError(str(error)) from None
        if args.insert == "comm" and self.link.extension_comm() is None:
            raise UsageError(
                "--insert comm: the keras2torch JupyterLab extension has not answered in this "
                "frontend (not installed, or the kernel extension was loaded before this page "
                "connected: run %reload_ext kerastorch_magic); use --insert auto"
            )
        return Options(class_name, instance_name(class_name), device, path, args.weights, args.insert)

    @staticmethod
    def _check_device(device: str) -> str:
        try:
            return devices.check(device)
        except ValueError as error:
            raise UsageError(f"--device {error}") from None

    # -- running the cell ---------------------------------------------------------------------------
    def _run_user_cell(self, cell: str, line: str, cell_id: str | None) -> bool:
        """Run the cell body through IPython's own machinery; False if it raised.

        A first comment line stands in for the magic line, so line numbers in tracebacks are the
        notebook cell's (unless another cell magic follows, which must stay first); the execution
        count is the cell's. On error the traceback IPython showed is the only output, and the
        cell's execution is marked failed (the execute reply's status is "error", so "run all"
        stops there as it would without the magic).
        """
        shell = self.shell
        outer = getattr(shell.displayhook, "exec_result", None)
        saved_count = shell.execution_count
        if outer is not None and getattr(outer, "execution_count", None) is not None:
            shell.execution_count = outer.execution_count
        if cell.lstrip().startswith("%%"):  # another cell magic below this one: it must stay first
            source = cell
        else:
            source = f"# %%keras2torch {line}".rstrip().replace("\n", " ") + "\n" + cell
        kwargs = {"store_history": False}
        if "cell_id" in inspect.signature(shell.run_cell).parameters:
            kwargs["cell_id"] = cell_id
        try:
            result = shell.run_cell(source, **kwargs)
        finally:
            shell.execution_count = saved_count
            shell.displayhook.exec_result = outer
        if result is None or result.success:
            return True
        if outer is not None:
            outer.error_in_exec = result.error_in_exec or result.error_before_exec
        return False

    def _named_model(self, variable: str) -> Picked:
        try:
            value = _lookup(self.shell.user_ns, variable)
        except KeyError:
            raise UsageError(f"no variable named {variable!r} (the Keras model to convert)") from None
        if not _is_keras_model(value):
            raise UsageError(
                f"{variable} is a {_describe(value)}, not a Keras model (keras.Model: Sequential, "
                "Functional...)"
            )
        return Picked(value, variable)

    def _model_from_cell(self, cell: str, before: dict) -> Picked:
        """The Keras model the cell created or rebound; with several, the last one assigned."""
        after = self.shell.user_ns
        changed = [
            (name, value)
            for name, value in after.items()
            if not name.startswith("_")
            and (name not in before or before[name] is not value)
            and _is_keras_model(value)
        ]
        if not changed:
            existing = sorted(
                name for name, value in after.items() if not name.startswith("_") and _is_keras_model(value)
            )
            hint = (
                f" Keras models defined earlier: {', '.join(existing)}; convert one with "
                f"%keras2torch {existing[-1]} (or --model {existing[-1]})."
                if existing
                else " Assign the model to a variable, e.g. model = keras.Sequential([...])."
            )
            raise UsageError(
                "%%keras2torch: the cell did not create or rebind a Keras model (looked for variables "
                "that hold a keras.Model and were bound to a different object by this cell)." + hint
            )
        try:
            transformed = self.shell.transform_cell(cell)
        except Exception:  # noqa: BLE001 - it ran, so this is only for the ordering
            transformed = cell
        order = assignment_order(transformed)
        # Cell order; names the cell's text does not assign (globals()[...], exec) rank first.
        position = {name: index for index, name in enumerate(after)}
        ranked = sorted(changed, key=lambda item: (order.get(item[0], (-1, -1)), position[item[0]]))
        name, model = ranked[-1]
        others = [n for n, v in ranked if v is not model]
        note = ""
        if others:
            distinct = list(dict.fromkeys(others))
            note = (
                f"keras2torch: the cell bound {len(distinct) + 1} Keras models "
                f"({', '.join([*distinct, name])}); converting {name}, the last one assigned. "
                "Pick another with --model NAME."
            )
        return Picked(model, name, note)

    def _sample_input(self, variable: str | None):
        if not variable:
            return None
        try:
            return _lookup(self.shell.user_ns, variable)
        except KeyError:
            raise UsageError(f"--input {variable}: no variable named {variable!r}") from None

    # -- converting and writing ---------------------------------------------------------------------
    def _convert_and_write(self, picked: Picked, options: Options, args, sample, cell_id) -> None:
        from . import convert
        from .registry import ConversionError

        for failure in self.link.take_failures():
            print(f"keras2torch: the extension could not write the previous generated cell: {failure}")
        if picked.note:
            print(picked.note)
        try:
            conversion = convert(
                picked.model,
                class_name=options.class_name,
                input_format=args.input_format,
                fold_batchnorm=args.fold_batchnorm,
                structure="flat" if args.flat else "blocks",
            )
        except ConversionError as error:
            raise _clean_error(error) from None
        if sample is not None and not args.no_compare:
            from .compare.inputs import check

            try:  # before anything is written: a bad --input is a usage error
                check(picked.model, sample)
            except ValueError as error:
                raise UsageError(f"--input {args.input}: {error}") from None
        elif sample is not None:
            print("keras2torch: --input is only used by the comparison, which --no-compare skips.")
        code = self._generated_cell(conversion, options, cell_id, picked.model)
        self._store_weights(conversion, options, cell_id)
        defined = self._define(code, conversion.class_name, options)
        mode = options.insert
        delivery = self.link.deliver(code, cell_id, conversion.class_name, mode)
        where = {
            "comm": "written below by the JupyterLab extension",
            "payload": "inserted below (set_next_input)",
            "skipped": "unchanged, not inserted again",
            "none": "not inserted (--insert none)",
        }[delivery.route]
        frontend.display_code(code, f"PyTorch class {conversion.class_name}, {where}")
        model_name = getattr(picked.model, "name", "?")
        extra = [name for name in defined if name not in (conversion.class_name, options.instance)]
        also = f", with {', '.join(extra)}" if extra else ""
        source = (
            f"in {weights.STORE_NAME}[{conversion.class_name!r}]"
            if options.weights_path is None
            else f"in {options.weights_raw}"
        )
        print(
            f"keras2torch: converted {picked.variable} (Keras model {model_name!r}) to class "
            f"{conversion.class_name}; weights {source}; generated cell {delivery.message}.\n"
            f"keras2torch: {conversion.class_name} (class) and {options.instance} (instance, Keras "
            f"weights loaded, eval mode) are defined{also}; running the generated cell defines them "
            "again, with your edits."
        )
        if not args.no_compare:  # after the code's summary: a large model compares for a while
            from .compare import compare

            try:
                comparison = compare(picked.model, conversion, inputs=sample, device=options.device)
            except KerasRunError as error:
                # Keras, not the port, failed (a channels_first model on TensorFlow's CPU): the
                # class is delivered and defined, so the cell succeeds and Run All goes on.
                print(f"keras2torch: no comparison: {error}", file=sys.stderr)
            else:
                _show_comparison(comparison)

    def _generated_cell(self, conversion, options: Options, cell_id, model) -> str:
        extra_import, load = weights.loading_lines(
            options.instance, conversion.class_name, options.weights_path, options.weights_raw
        )
        code = conversion.code.rstrip("\n")
        if extra_import:
            code = add_import(code, extra_import)
        instance = options.instance
        body = "\n".join(
            [code, "", "", f"{instance} = {conversion.class_name}()", *load, f"{instance}.eval()", ""]
        )
        body = training.add_to(body, model, conversion)  # a compiled model's training setup
        return frontend.with_marker(body, cell_id)

    def _define(self, code: str, class_name: str, options: Options) -> list[str]:
        """Run the generated cell's code now and bind what it defines in the user namespace.

        So a notebook runs top to bottom however it is run: JupyterLab's Run All does not run the
        cells inserted during the run, and nbclient, nbconvert and papermill never insert them.
        The code runs in a namespace of its own (holding the weight store it loads from); its
        class, instance, functions (a compiled model's training setup) reach the user's, not its
        imports. Running the generated cell later binds them again. Returns the names bound.
        """
        filename = f"<keras2torch generated {class_name}>"
        linecache.cache[filename] = (len(code), None, code.splitlines(keepends=True), filename)
        user_ns = self.shell.user_ns
        namespace = {"__name__": user_ns.get("__name__", "__main__")}
        if options.weights_path is None:
            namespace[weights.STORE_NAME] = weights.get_store(user_ns)
        exec(compile(code, filename, "exec"), namespace)  # noqa: S102 - the code this magic generated
        names = defined_names(code)
        for name in names:
            user_ns[name] = namespace[name]
        return names

    def _store_weights(self, conversion, options: Options, cell_id) -> None:
        if options.weights_path is not None:
            try:
                weights.write(conversion.state_dict, options.weights_path)
            except OSError as error:
                raise UsageError(f"--weights {options.weights_raw!r}: could not write ({error})") from None
            return
        store = weights.get_store(self.shell.user_ns)
        name = conversion.class_name
        previous = store.sources.get(name)
        if previous and cell_id and previous != cell_id:
            print(
                f"keras2torch: note: {name} was generated from another cell before ({previous}); its "
                f"generated cell now loads these weights too. Use --name to keep both."
            )
        store[name] = conversion.state_dict
        store.sources[name] = cell_id


# -- the comparison ---------------------------------------------------------------------------------
def _show_comparison(comparison) -> None:
    from IPython.display import display

    display(comparison)
    if getattr(comparison, "ok", True) is False:
        print("keras2torch: WARNING: some PyTorch outputs differ from Keras beyond tolerance (see above).")


# -- extension hooks --------------------------------------------------------------------------------
def load_ipython_extension(ipython) -> None:
    """Register the magics and the ``pre_run_cell`` hook, then greet the frontend (comm hello).

    Loading again (``%reload_ext``) keeps the state and greets again: a page that connected since
    can then answer. (Importing the package imported Keras, with TensorFlow's C++ start-up lines
    filtered by ``TF_CPP_MIN_LOG_LEVEL``: see :mod:`startup`. Load the extension before
    ``import keras`` and the first cell stays free of them.)
    """
    registry = ipython.magics_manager.registry
    magics = registry.get("Keras2TorchMagics")
    if not isinstance(magics, Keras2TorchMagics) or magics.shell is not ipython:
        magics = Keras2TorchMagics(ipython)
        ipython.register_magics(magics)
    _unregister_hook(ipython)
    ipython.events.register("pre_run_cell", magics.pre_run_cell)
    magics.link.hello()


def unload_ipython_extension(ipython) -> None:
    _unregister_hook(ipython)


def _unregister_hook(ipython) -> None:
    for callback in list(ipython.events.callbacks.get("pre_run_cell", [])):
        owner = getattr(callback, "__self__", None)
        if type(owner).__name__ == "Keras2TorchMagics":
            ipython.events.unregister("pre_run_cell", callback)
