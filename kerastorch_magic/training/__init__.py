"""The training setup of a compiled Keras model, as PyTorch code placed under the generated class.

``model.compile(optimizer=..., loss=..., metrics=...)`` becomes two functions:

* ``configure_training(model)`` -> ``(optimizer, loss_fn)`` or ``(optimizer, scheduler, loss_fn)``
  when the learning rate follows a ``keras.optimizers.schedules`` schedule;
* ``train_step(model, <those>, x, y)``: one step of Keras's ``fit`` (forward in train mode, loss,
  backward, gradient clipping, weight decay, update, schedule) returning the loss and the metrics.

Where Keras and torch differ, the code says so in a comment; the translations are exact except
where a comment says by how much they are not (Keras's epsilon placement in Adam/RMSprop/Adagrad:
only when gradients are tiny). A setting with no torch counterpart makes ``configure_training``
raise ``NotImplementedError`` naming it: wrong training code would be worse than none.

Read against ``keras/src/optimizers/*.py`` (update rules, ``_clip_gradients``,
``_apply_weight_decay``), ``keras/src/losses/losses.py`` and ``keras/src/trainers/compile_utils.py``
(how ``"accuracy"`` is resolved).
"""

from __future__ import annotations

import json
import textwrap

from .. import legacy
from . import optimizers
from .parts import Parts, num

KERAS_DEFAULT_REDUCTION = ("sum_over_batch_size", "mean")


# -- entry points -----------------------------------------------------------------------------------
def training_snippet(model, conversion) -> str | None:
    """The training setup of ``model`` (a compiled Keras model) for the port ``conversion``.

    Standalone source (its own imports); None when the model was not compiled with a loss or an
    optimizer.
    """
    model = legacy.as_keras3(model)  # a Keras 2 model's compile settings, as Keras 3 reads them
    parts = _translate(model, conversion)
    if parts is None:
        return None
    body = _body(model, parts)
    return merge_imports("\n".join([*body, ""]), _imports(body, parts))


def add_to(code: str, model, conversion) -> str:
    """``code`` (a generated cell or module) with the training setup appended, imports merged."""
    model = legacy.as_keras3(model)
    parts = _translate(model, conversion)
    if parts is None:
        return code
    body = _body(model, parts)
    code = code.rstrip("\n") + "\n\n\n" + "\n".join(body) + "\n"
    return merge_imports(code, _imports(body, parts))


def _imports(body: list[str], parts: Parts) -> list[str]:
    """The imports ``body`` needs: torch and nn when it uses them, plus the schedule's module."""
    import ast

    names = {node.id for node in ast.walk(ast.parse("\n".join(body))) if isinstance(node, ast.Name)}
    used = [
        line for line, name in (("import torch", "torch"), ("from torch import nn", "nn")) if name in names
    ]
    return used + parts.imports


def merge_imports(code: str, imports: list[str]) -> str:
    """``code`` with ``imports`` added to its import block, sorted and grouped as ruff's isort does
    (standard library first), duplicates dropped. Without ruff, added unsorted."""
    lines = code.split("\n")
    first = next((i for i, line in enumerate(lines) if line.startswith(("import ", "from "))), 0)
    return _sorted_imports("\n".join(lines[:first] + list(imports) + lines[first:]))


def _sorted_imports(code: str) -> str:
    import subprocess

    from ..codegen import _ruff

    ruff = _ruff()
    if ruff is None:
        return code
    result = subprocess.run(
        [ruff, "check", "--isolated", "--select", "I", "--fix", "--quiet", "--stdin-filename", "net.py", "-"],
        input=code,
        capture_output=True,
        text=True,
    )
    return result.stdout if result.stdout.strip() else code


def _compile_config(model) -> dict:
    try:
        return model.get_compile_config() or {}
    except Exception:  # noqa: BLE001 - uncompiled or exotic models have none
        return {}


def _translate(model, conversion) -> Parts | None:
    config = _compile_config(model)
    optimizer = getattr(model, "optimizer", None)
    if not config or optimizer is None or config.get("loss") is None:
        return None
    parts = Parts()
    optimizers.translate_optimizer(optimizer, parts)
    _loss(model, conversion, config, parts)
    _metrics(model, config, parts)
    return parts


def _loss_identity(loss) -> tuple[str, dict]:
    """(canonical function name, options) of a compiled loss: a name, function or Loss object."""
    import keras

    if isinstance(loss, str):
        loss = keras.losses.get(loss)
    if isinstance(loss, keras.losses.Loss):
        # A wrapper's own options (Huber's delta...) are kept apart from get_config()'s.
        cfg = {**loss.get_config(), **getattr(loss, "_fn_kwargs", {})}
        fn = getattr(loss, "fn", None)
        name = getattr(fn, "__name__", None) or type(loss).__name__
        return name, cfg
    return getattr(loss, "__name__", type(loss).__name__), {}


def _output_activation(model) -> str | None:
    """``"softmax"``/``"sigmoid"`` when the model's (single) output ends with one."""
    layer = model.outputs[0]._keras_history.operation
    kind = type(layer).__name__
    if kind == "Softmax":
        return "softmax"
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "__name__", None)
    return name if name in ("softmax", "sigmoid") else None


def _loss(model, conversion, config: dict, parts: Parts) -> None:
    loss = model.loss
    if isinstance(loss, (list, tuple, dict)) or len(conversion.outputs) != 1:
        parts.refusals.append("losses of multi-output models are not translated")
        return
    name, cfg = _loss_identity(loss)
    reduction = cfg.get("reduction", "sum_over_batch_size")
    from_logits = bool(cfg.get("from_logits", False))
    smoothing = float(cfg.get("label_smoothing", 0.0) or 0.0)
    activation = _output_activation(model)
    setup, lines = parts.setup, parts.loss_lines
    if config.get("loss_weights") not in (None, 1, 1.0, [1.0], [1]):
        parts.refusals.append(f"loss_weights={config['loss_weights']!r} is not translated")
    torch_reduction = {"sum": "sum", "none": "none", None: "none"}.get(reduction, "mean")
    if reduction not in (*KERAS_DEFAULT_REDUCTION, "sum", "none", None):
        parts.refusals.append(f"the loss reduction {reduction!r} is not translated")
    if name in ("categorical_crossentropy", "sparse_categorical_crossentropy"):
        sparse = name.startswith("sparse")
        args = [] if torch_reduction == "mean" else [f'reduction="{torch_reduction}"']
        if smoothing:
            args.append(f"label_smoothing={num(smoothing)}")
        if sparse and cfg.get("ignore_class") is not None:
            args.append(f"ignore_index={cfg['ignore_class']}")
        targets = (
            "class ids (int64, shape (N,))" if sparse else "one-hot or soft labels (float, shape (N, C))"
        )
        setup.append(f"# Keras {name} -> CrossEntropyLoss; targets: {targets}.")
        if len(conversion.outputs[0].keras_shape) > 2:
            setup.append("# torch takes the classes on dim 1 (Keras: the last axis): permute if needed.")
        setup.append(f"loss_fn = nn.CrossEntropyLoss({', '.join(args)})")
        setup.append(
            "# fit(class_weight=...) is not part of compile(): to weight classes as Keras does, use "
            'reduction="none" and (loss * class_weights[labels]).mean(); CrossEntropyLoss(weight=...) '
            "divides by the sum of the batch's weights, Keras by the batch size."
        )
        if from_logits:
            lines.append("loss = loss_fn(y_pred, y)")
        else:
            lines += [
                "# CrossEntropyLoss takes logits and applies log_softmax itself. This forward returns",
                "# probabilities (the Keras model's softmax), and log_softmax(log(p)) == log(p), so",
                "# log(p) gives the same loss. Better: return the logits from forward (drop its final",
                "# softmax) and pass them: that is also what Keras computes on a softmax output.",
                "loss = loss_fn(torch.log(y_pred), y)",
            ]
            if activation != "softmax":
                parts.setup.append(
                    "# (The model's output is not a softmax layer: the outputs are taken as probabilities.)"
                )
        return
    elementwise = {
        "binary_crossentropy": "nn.BCEWithLogitsLoss" if from_logits else "nn.BCELoss",
        "mean_squared_error": "nn.MSELoss",
        "mean_absolute_error": "nn.L1Loss",
        "huber": "nn.HuberLoss",
    }
    if name not in elementwise:
        parts.refusals.append(f"the Keras loss {name!r} is not translated")
        return
    args = [f"delta={num(cfg.get('delta', 1.0))}"] if name == "huber" else []
    if torch_reduction != "mean":
        args.append('reduction="none"')
    if name == "binary_crossentropy" and not from_logits:
        setup.append(
            "# Keras clips probabilities to [1e-7, 1 - 1e-7], BCELoss clamps log(p) at -100: equal unless "
            "saturated. With a sigmoid output, returning logits and BCEWithLogitsLoss is stabler."
        )
    setup.append(f"loss_fn = {elementwise[name]}({', '.join(args)})")
    if smoothing:
        lines.append(f"y = y * (1 - {num(smoothing)}) + 0.5 * {num(smoothing)}  # Keras's label_smoothing")
    if torch_reduction == "mean":
        lines.append("loss = loss_fn(y_pred, y)")
        return
    # Keras averages over the last axis first (one loss per sample), then sums or keeps them.
    reduce = ".sum()" if torch_reduction == "sum" else ""
    lines.append(
        f"loss = loss_fn(y_pred, y).mean(dim=-1){reduce}  # Keras: per-sample mean, then {reduction}"
    )


# -- metrics ----------------------------------------------------------------------------------------
def _metric_list(config: dict) -> list | None:
    """The compiled metrics as one flat list; None when they are given per output."""
    metrics = config.get("metrics") or []
    if isinstance(metrics, dict):
        return None
    if len(metrics) == 1 and isinstance(metrics[0], list):  # a single output's list (legacy .h5)
        metrics = metrics[0]
    if any(isinstance(m, list) or isinstance(m, dict) and "class_name" not in m for m in metrics):
        return None
    return list(metrics)


def _metric_name(serialized: dict) -> str:
    return serialized.get("config", {}).get("name") or serialized.get("class_name", "?")


def _metrics(model, config: dict, parts: Parts) -> None:
    metrics = _metric_list(config)
    if metrics is None:
        parts.refusals.append("per-output metrics are not translated")
        return
    loss_name = _loss_identity(model.loss)[0] if not isinstance(model.loss, (list, dict)) else ""
    for metric in metrics:
        name = metric if isinstance(metric, str) else _metric_name(metric)
        key = name.lower()
        if key in ("accuracy", "acc"):
            last = model.outputs[0].shape[-1]
            if last == 1:
                key = "binary_accuracy"
            elif loss_name == "sparse_categorical_crossentropy":
                key = "sparse_categorical_accuracy"
            else:
                key = "categorical_accuracy"
        expr = _METRICS.get(key)
        if expr is None:
            parts.metrics.append((name, None, f"metric {name!r} is not translated"))
        else:
            parts.metrics.append((name, expr, None))


_METRICS = {
    "binary_accuracy": "((y_pred > 0.5).float() == y).float().mean()",
    "categorical_accuracy": "(y_pred.argmax(dim=1) == y.argmax(dim=1)).float().mean()",
    "sparse_categorical_accuracy": "(y_pred.argmax(dim=1) == y.flatten()).float().mean()",
    "mae": "(y_pred - y).abs().mean()",
    "mean_absolute_error": "(y_pred - y).abs().mean()",
    "mse": "(y_pred - y).square().mean()",
    "mean_squared_error": "(y_pred - y).square().mean()",
}


# -- rendering --------------------------------------------------------------------------------------
def _body(model, parts: Parts) -> list[str]:
    """The two functions, ``ruff format``-ed, comments wrapped to 88 columns."""
    from ..codegen import format_source

    return format_source("\n".join(_wrap_comments(_functions(model, parts)))).rstrip("\n").split("\n")


def _wrap_comments(lines: list[str]) -> list[str]:
    """Consecutive ``#`` lines of one indent reflowed as one paragraph, 88 columns wide."""
    wrapped: list[str] = []
    paragraph: list[str] = []
    indent = ""

    def flush() -> None:
        if paragraph:
            width = 88 - len(indent) - 2
            wrapped.extend(f"{indent}# {part}" for part in textwrap.wrap(" ".join(paragraph), width))
            paragraph.clear()

    for line in lines:
        text = line.lstrip()
        here = line[: len(line) - len(text)]
        if not text.startswith("# "):
            flush()
            wrapped.append(line)
            continue
        if here != indent:
            flush()
            indent = here
        paragraph.append(text[2:])
    flush()
    return wrapped


def _functions(model, parts: Parts) -> list[str]:
    from .. import naming

    summary = _summary(model)
    returns = "optimizer, scheduler, loss_fn" if parts.scheduler else "optimizer, loss_fn"
    lines = [
        "# Training setup translated from the Keras model's compile():",
        f"# {summary}",
        "",
        "",
        *([*parts.classes, "", ""] if parts.classes and not parts.refusals else []),
        "def configure_training(model):",
        f'    """The optimizer{", schedule" if parts.scheduler else ""} and loss of the Keras compile()."""',
    ]
    if parts.refusals:  # no train_step either: it would use what cannot be set up
        pieces = [
            json.dumps(f"{text}; " if i < len(parts.refusals) - 1 else text)
            for i, text in enumerate(parts.refusals)
        ]
        return [*lines, "    raise NotImplementedError(", *[f"        {piece}" for piece in pieces], "    )"]
    lines += [f"    {line}" for line in parts.setup]
    lines += [f"    {line}" for line in parts.schedule]
    lines.append(f"    return {returns}")
    lines += [
        "",
        "",
        f"def train_step(model, {returns}, x, y):",
        '    """One step of Keras\'s fit() on the batch (x, y): the loss and the batch\'s metrics."""',
        "    model.train()  # dropout and batch-norm statistics on, as in fit()",
        "    optimizer.zero_grad()",
        "    y_pred = model(x)",
        *[f"    {line}" for line in parts.loss_lines],
        "    loss.backward()",
        *[f"    {line}" for line in parts.before_update],
        "    optimizer.step()",
    ]
    if parts.scheduler:
        lines.append("    scheduler.step()")
    translated = [(name, expr) for name, expr, _ in parts.metrics if expr]
    for _name, _expr, why in parts.metrics:
        if why:
            lines.append(f"    # {naming.comment_text(why, 80)}")
    if translated:
        lines += [
            "    # Keras's progress bar shows running means over the epoch; these are this batch's values.",
            "    with torch.no_grad():",
            "        metrics = {",
            *[f"            {json.dumps(name)}: {expr}.item()," for name, expr in translated],
            "        }",
            "    return loss.item(), metrics",
        ]
    else:
        lines.append("    return loss.item(), {}")
    return lines


def _summary(model) -> str:
    from .. import naming

    optimizer = type(model.optimizer).__name__
    loss = _loss_identity(model.loss)[0] if not isinstance(model.loss, (list, dict)) else "per output"
    config = _compile_config(model)
    metrics = [m if isinstance(m, str) else _metric_name(m) for m in (_metric_list(config) or [])]
    text = f"optimizer={optimizer}, loss={loss}" + (f", metrics={metrics}" if metrics else "")
    return naming.comment_text(text, 200)
