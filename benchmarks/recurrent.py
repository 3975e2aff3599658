"""Inference speed of a generated recurrent text classifier against Keras, same CPU, same run.

The model: ``Embedding(20000, 128, mask_zero=True)`` -> two ``Bidirectional(LSTM(128))`` (the
first returning sequences) -> ``Dense(1, sigmoid)``; batch 32, length 200, random token ids with
each row's padding (zeros) at its end, lengths 50..200. The mask makes it the realistic case: the
port runs ``keras_masked_rnn`` (packed sequences on ``nn.LSTM(bidirectional=True)``).

Timed, medians of interleaved runs (every variant once per round, so a busy machine slows them
alike):

* ``torch``: the generated module (``torch.inference_mode``);
* Keras: ``model(x, training=False)`` (eager) and ``model.predict_on_batch(x)`` (compiled
  ``tf.function``); the faster one is the reference.

Ratio = Keras time / PyTorch time: >= 1.0 means the port is at least as fast (the target).
``--unmasked`` times the same model without ``mask_zero`` (plain ``nn.LSTM`` calls).

    .venv/bin/python benchmarks/recurrent.py [--runs 5] [--unmasked] [--threads N]

``--threads N`` gives both libraries N intra-op threads (torch.set_num_threads, TensorFlow's
intra-op pool); 0 keeps each library's default. On a loaded machine torch's default OpenMP team
spin-waits for busy cores, so compare at equal, small thread counts there.

On a GPU (``--device cuda``) the torch side runs on cuDNN; Keras stays on the CPU there (the
TensorFlow build here is CPU-only), so only the torch time is printed for it.
"""

from __future__ import annotations

import argparse
import sys

from _common import interleaved  # first: quiets TensorFlow, makes the package importable

VOCAB, UNITS, BATCH, LENGTH = 20_000, 128, 32, 200
SPEED_TARGET = 1.0


def build_model(masked: bool):
    import keras

    L = keras.layers
    tokens = keras.Input((LENGTH,), dtype="int32", name="tokens")
    x = L.Embedding(VOCAB, UNITS, mask_zero=masked)(tokens)
    x = L.Bidirectional(L.LSTM(UNITS, return_sequences=True))(x)
    x = L.Bidirectional(L.LSTM(UNITS))(x)
    return keras.Model(tokens, L.Dense(1, activation="sigmoid")(x), name="bilstm_classifier")


def padded_batch(seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCAB, (BATCH, LENGTH)).astype("int32")
    lengths = rng.integers(50, LENGTH + 1, BATCH)
    ids[np.arange(LENGTH)[None, :] >= lengths[:, None]] = 0
    return ids


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--unmasked", action="store_true", help="no mask_zero: plain nn.LSTM calls")
    parser.add_argument("--device", default="cpu", help="torch device (cuda: torch time only)")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads for both (0: defaults)")
    args = parser.parse_args()

    import tensorflow as tf
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    import keras
    import numpy as np

    import kerastorch_magic as k2t

    keras.utils.set_random_seed(0)
    model = build_model(masked=not args.unmasked)
    ids = padded_batch()
    conversion = k2t.convert(model)
    module = conversion.build(device=args.device)
    x_torch = torch.from_numpy(ids).to(args.device)
    x_tf = tf.constant(ids)

    def run_torch():
        with torch.inference_mode():
            module(x_torch)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    with torch.inference_mode():
        error = float(np.max(np.abs(module(x_torch).cpu().numpy() - np.asarray(model(x_tf)))))
    print(
        f"{model.name}: {'unmasked' if args.unmasked else 'masked, right-padded'}, batch {BATCH}, "
        f"length {LENGTH}, vocab {VOCAB}, units {UNITS}; torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), TF {tf.__version__}; max |torch - keras| = {error:.2e}"
    )
    if not args.device.startswith("cpu"):
        times = interleaved({"torch": run_torch}, args.runs)
        print(f"torch on {args.device}: {times['torch'] * 1e3:.1f} ms")
        return 0
    functions = {
        "torch": run_torch,
        "keras eager": lambda: model(x_tf, training=False),
        "keras predict_on_batch": lambda: model.predict_on_batch(x_tf),
    }
    times = interleaved(functions, args.runs)
    keras_best = min(times["keras eager"], times["keras predict_on_batch"])
    for name, seconds in times.items():
        print(f"  {name:24s} {seconds * 1e3:8.1f} ms")
    ratio = keras_best / times["torch"]
    verdict = "meets" if ratio >= SPEED_TARGET else "below"
    print(f"ratio Keras / torch = {ratio:.2f}x ({verdict} the {SPEED_TARGET:.1f}x target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
