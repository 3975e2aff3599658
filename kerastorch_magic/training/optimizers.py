"""Keras optimizers, gradient clipping and learning-rate schedules as torch code.

Read against ``keras/src/optimizers/*.py`` (update rules, ``_clip_gradients``,
``_apply_weight_decay``) and ``keras/src/optimizers/schedules``.
"""

from __future__ import annotations

from .parts import Parts, num

# -- the optimizer ----------------------------------------------------------------------------------
_ADAM_EPSILON = (
    "Keras's epsilon is Adam's 'epsilon hat': added to sqrt(v) before the bias correction; torch adds "
    "eps after it. Equal updates unless sqrt(v) is as small as eps (vanishing gradients)."
)


def translate_optimizer(optimizer, parts: Parts) -> None:
    kind = type(optimizer).__name__
    cfg = optimizer.get_config()
    for option in ("use_ema", "gradient_accumulation_steps", "loss_scale_factor"):
        if cfg.get(option):
            parts.refusals.append(f"Keras optimizer option {option}={cfg[option]!r} is not translated")
    lr = _learning_rate(optimizer, parts)
    setup = parts.setup
    if kind == "SGD":
        momentum, nesterov = float(cfg["momentum"]), bool(cfg["nesterov"])
        args = f"lr={lr}" + (f", momentum={num(momentum)}" if momentum else "")
        args += ", nesterov=True" if nesterov else ""
        if momentum:
            setup.append(
                "# Keras's momentum keeps v = momentum * v - lr * g, torch's keeps b = momentum * b + g "
                "and steps by lr * b: the same updates while the learning rate is constant."
            )
        setup.append(f"optimizer = torch.optim.SGD(model.parameters(), {args})")
    elif kind in ("Adam", "AdamW"):
        setup.append(f"# {_ADAM_EPSILON}")
        args = f"lr={lr}, betas=({num(cfg['beta_1'])}, {num(cfg['beta_2'])}), eps={num(cfg['epsilon'])}"
        if cfg.get("amsgrad"):
            args += ", amsgrad=True"
        if kind == "AdamW":
            setup.append(
                "# Both decay decoupled (w -= lr * weight_decay * w); Keras's default is 0.004, torch's 0.01."
            )
            args += f", weight_decay={num(cfg['weight_decay'])}"
        setup.append(f"optimizer = torch.optim.{kind}(model.parameters(), {args})")
    elif kind == "RMSprop":
        parts.classes = _keras_rmsprop(bool(cfg.get("momentum")), bool(cfg.get("centered")))
        args = f"lr={lr}, rho={num(cfg['rho'])}, epsilon={num(cfg['epsilon'])}"
        if cfg.get("momentum"):
            args += f", momentum={num(cfg['momentum'])}"
        setup.append(f"optimizer = KerasRMSprop(model.parameters(), {args})")
    elif kind == "Adagrad":
        setup.append(
            "# Keras divides by sqrt(accumulator + eps), torch by sqrt(accumulator) + eps; Keras starts the "
            "accumulator at 0.1 by default, torch at 0."
        )
        setup.append(
            f"optimizer = torch.optim.Adagrad(model.parameters(), lr={lr}, "
            f"initial_accumulator_value={num(cfg['initial_accumulator_value'])}, eps={num(cfg['epsilon'])})"
        )
    elif kind == "Adadelta":
        setup.append("# Keras's default learning rate is 0.001, torch's 1.0.")
        setup.append(
            f"optimizer = torch.optim.Adadelta(model.parameters(), lr={lr}, rho={num(cfg['rho'])}, "
            f"eps={num(cfg['epsilon'])})"
        )
    elif kind == "Adamax":
        setup.append(
            "# Keras adds eps to the infinity norm at the update, torch inside the max: equal unless "
            "gradients are as small as eps."
        )
        setup.append(
            f"optimizer = torch.optim.Adamax(model.parameters(), lr={lr}, "
            f"betas=({num(cfg['beta_1'])}, {num(cfg['beta_2'])}), eps={num(cfg['epsilon'])})"
        )
    elif kind == "Nadam":
        setup.append(
            "# Same momentum schedule as Keras (momentum_decay=0.004 is Keras's 0.96 ** (0.004 * t)); "
            + _ADAM_EPSILON
        )
        setup.append(
            f"optimizer = torch.optim.NAdam(model.parameters(), lr={lr}, "
            f"betas=({num(cfg['beta_1'])}, {num(cfg['beta_2'])}), eps={num(cfg['epsilon'])})"
        )
    else:
        parts.refusals.append(f"the Keras optimizer {kind} has no torch.optim counterpart translated here")
        return
    _clipping(cfg, parts)
    if cfg.get("weight_decay") and kind != "AdamW":
        parts.before_update += [
            "# Keras's weight_decay is decoupled and scaled by the learning rate (w -= lr * wd * w,",
            "# before the update); torch's weight_decay= would add wd * w to the gradient instead.",
            "with torch.no_grad():",
            "    for parameter in model.parameters():",
            f'        parameter.mul_(1 - optimizer.param_groups[0]["lr"] * {num(cfg["weight_decay"])})',
        ]


def _keras_rmsprop(momentum: bool, centered: bool) -> list[str]:
    """Keras's RMSprop as a torch optimizer (only the branches this configuration uses).

    torch.optim.RMSprop is not exact: it adds eps outside the square root, and then a parameter
    whose gradients are small (RMS near sqrt(eps) = 3e-4) takes steps up to 3x larger than in
    Keras; its ``alpha`` is Keras's ``rho`` (torch default 0.99, Keras 0.9).
    """
    signature = "lr=0.001, rho=0.9, epsilon=1e-07" + (", momentum=0.0" if momentum else "")
    defaults = '"lr": lr, "rho": rho, "epsilon": epsilon' + (', "momentum": momentum' if momentum else "")
    kind = "centered " if centered else ""
    lines = [
        "class KerasRMSprop(torch.optim.Optimizer):",
        f'    """Keras\'s {kind}RMSprop: w -= lr * g / sqrt(v + epsilon), v the running mean of g ** 2.',
        "",
        "    torch.optim.RMSprop adds eps outside the square root (sqrt(v) + eps): parameters whose",
        "    gradients are small (RMS near sqrt(eps) = 3e-4) would take steps up to 3x larger than in",
        "    Keras. Its alpha is Keras's rho (torch's default is 0.99, Keras's 0.9).",
        '    """',
        "",
        f"    def __init__(self, params, {signature}):",
        f"        super().__init__(params, {{{defaults}}})",
        "",
        "    @torch.no_grad()",
        "    def step(self):",
        "        for group in self.param_groups:",
        '            rho = group["rho"]',
        '            for p in group["params"]:',
        "                if p.grad is None:",
        "                    continue",
        "                state = self.state[p]",
        "                if not state:",
        '                    state["velocity"] = torch.zeros_like(p)',
    ]
    if centered:
        lines.append('                    state["average_grad"] = torch.zeros_like(p)')
    if momentum:
        lines.append('                    state["momentum"] = torch.zeros_like(p)')
    lines += [
        '                velocity = state["velocity"]',
        "                velocity.mul_(rho).add_((1 - rho) * p.grad.square())",
    ]
    if centered:
        lines += [
            '                average_grad = state["average_grad"]',
            "                average_grad.mul_(rho).add_((1 - rho) * p.grad)",
            '                denominator = velocity - average_grad.square() + group["epsilon"]',
        ]
    else:
        lines.append('                denominator = velocity + group["epsilon"]')
    lines.append('                increment = group["lr"] * p.grad / denominator.sqrt()')
    if momentum:
        lines += [
            '                buffer = state["momentum"]',
            '                buffer.mul_(group["momentum"]).add_(increment)',
            "                p.sub_(buffer)",
        ]
    else:
        lines.append("                p.sub_(increment)")
    return lines


def _clipping(cfg: dict, parts: Parts) -> None:
    lines = parts.before_update
    if cfg.get("clipnorm"):
        lines += [
            "# clipnorm: Keras clips each gradient by its own norm (not all of them together).",
            "for parameter in model.parameters():",
            f"    torch.nn.utils.clip_grad_norm_(parameter, max_norm={num(cfg['clipnorm'])})",
        ]
    if cfg.get("global_clipnorm"):
        lines += [
            "# global_clipnorm: one norm over all gradients (torch adds 1e-6 to the norm: negligible).",
            f"torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm={num(cfg['global_clipnorm'])})",
        ]
    if cfg.get("clipvalue"):
        lines += [
            "# clipvalue: each gradient element clipped to [-clipvalue, clipvalue].",
            f"torch.nn.utils.clip_grad_value_(model.parameters(), clip_value={num(cfg['clipvalue'])})",
        ]


def _learning_rate(optimizer, parts: Parts) -> str:
    """The torch ``lr`` text; a Keras schedule also adds a ``LambdaLR`` to the setup."""
    import keras

    schedule = getattr(optimizer, "_learning_rate", None)
    if not isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule):
        return num(optimizer.learning_rate.numpy() if hasattr(optimizer.learning_rate, "numpy") else 0.001)
    kind, cfg = type(schedule).__name__, schedule.get_config()
    factor = _schedule_factor(kind, cfg)
    if factor is None:
        parts.refusals.append(f"the learning-rate schedule {kind} is not translated")
        return num(cfg.get("initial_learning_rate", 0.001))
    initial, lines, module = factor
    if module:
        parts.imports.append(f"import {module}")
    parts.schedule = [
        "",
        f"# keras.optimizers.schedules.{kind}: Keras evaluates it at every optimizer step (batch),",
        "# so call scheduler.step() after every optimizer.step(), not once per epoch.",
        *lines,
        "",
        "scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=lr_factor)",
    ]
    return initial


def _schedule_factor(kind: str, cfg: dict) -> tuple[str, list[str], str | None] | None:
    """(initial lr text, lines defining ``lr_factor(step)``, the schedule over the initial lr, and
    the module those lines import), or None for a schedule not translated."""
    header = ["def lr_factor(step):"]
    if kind == "ExponentialDecay":
        exponent = f"(step // {cfg['decay_steps']})" if cfg["staircase"] else f"(step / {cfg['decay_steps']})"
        body = [f"    return {num(cfg['decay_rate'])} ** {exponent}"]
        return num(cfg["initial_learning_rate"]), header + body, None
    if kind == "InverseTimeDecay":
        ratio = f"(step // {cfg['decay_steps']})" if cfg["staircase"] else f"(step / {cfg['decay_steps']})"
        body = [f"    return 1 / (1 + {num(cfg['decay_rate'])} * {ratio})"]
        return num(cfg["initial_learning_rate"]), header + body, None
    if kind == "PolynomialDecay" and not cfg["cycle"]:
        initial, end = cfg["initial_learning_rate"], cfg["end_learning_rate"]
        body = [
            f"    progress = min(step, {cfg['decay_steps']}) / {cfg['decay_steps']}",
            f"    decayed = ({num(initial)} - {num(end)}) * (1 - progress) ** {num(cfg['power'])}",
            f"    lr = decayed + {num(end)}",
            f"    return lr / {num(initial)}",
        ]
        return num(initial), header + body, None
    if kind == "PiecewiseConstantDecay":
        values = [num(v) for v in cfg["values"]]
        body = [
            f"    # Keras: values[i] while step <= boundaries[i] (boundaries {cfg['boundaries']}).",
            f"    values = [{', '.join(values)}]",
            f"    return values[bisect.bisect_left({list(cfg['boundaries'])}, step)] / values[0]",
        ]
        return values[0], header + body, "bisect"
    if kind == "CosineDecay":
        initial, steps = cfg["initial_learning_rate"], cfg["decay_steps"]
        alpha, warmup_steps = num(cfg["alpha"]), cfg.get("warmup_steps") or 0
        target = cfg.get("warmup_target")
        body = []
        start = f"{num(target)} / {num(initial)}" if target is not None else "1.0"
        if target is not None and warmup_steps:
            body += [
                f"    if step < {warmup_steps}:  # linear warmup to warmup_target",
                f"        return 1 + ({start} - 1) * step / {warmup_steps}",
                f"    step -= {warmup_steps}",
            ]
        body += [
            f"    cosine = 0.5 * (1 + math.cos(math.pi * min(step, {steps}) / {steps}))",
            f"    return {start} * ((1 - {alpha}) * cosine + {alpha})",
        ]
        return num(initial), header + body, "math"
    return None


# -- the loss ---------------------------------------------------------------------------------------
