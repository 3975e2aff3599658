"""Speed of a converted Transformer encoder against Keras/TF and hand-written PyTorch, in one run.

The network: a 6-block post-norm encoder (dim 256, 8 heads, ReLU feed-forward 1024) built from
Keras layers (MultiHeadAttention, LayerNormalization, Dense, Add) as a Functional model, run on
(batch 16, sequence 256, 256) float32. Contenders, timed interleaved on the same CPU threads:

* ``keras``: the Keras model (TensorFlow backend) under a compiled ``tf.function``;
* ``generated``: the module kerastorch_magic generates (separate q/k/v ``nn.Linear``,
  ``F.scaled_dot_product_attention``), eval mode, ``torch.inference_mode``;
* ``sdpa``: hand-written torch with one fused q/k/v projection and ``F.scaled_dot_product_attention``;
* ``nn.TransformerEncoder``: torch's own encoder (post-norm, ReLU, no dropout), whose eval-mode
  fast path (``torch._transformer_encoder_layer_fwd``) fuses each block.

Prints each median (ms per batch) and the ratios; the target is generated >= 0.95x the fastest
hand-written torch. ``--device cuda`` times the torch contenders on a GPU (fp32 and bf16 autocast),
against Keras on its torch backend when ``KERAS_BACKEND=torch``.

    .venv/bin/python benchmarks/attention.py [--repeat 5] [--rounds 3] [--batch 16] [--seq 256] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# TF and torch share the cores: torch's OpenMP threads spin-waiting between parallel regions
# (the default, ACTIVE) starve TF's threads and each other whenever the machine is busy, and make
# torch 10x slower here. Passive waiting is the fair setting for a shared CPU; override if idle.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import timings  # noqa: E402

DIM, HEADS, FFN, BLOCKS = 256, 8, 1024, 6


def keras_encoder(seq: int):
    import keras

    inputs = keras.Input((seq, DIM))
    x = inputs
    for _ in range(BLOCKS):
        attended = keras.layers.MultiHeadAttention(HEADS, DIM // HEADS)(x, x)
        x = keras.layers.LayerNormalization(epsilon=1e-5)(keras.layers.Add()([x, attended]))
        hidden = keras.layers.Dense(FFN, activation="relu")(x)
        x = keras.layers.LayerNormalization(epsilon=1e-5)(
            keras.layers.Add()([x, keras.layers.Dense(DIM)(hidden)])
        )
    return keras.Model(inputs, x)


def hand_written_sdpa():
    import torch.nn.functional as F
    from torch import nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(DIM, 3 * DIM)
            self.out = nn.Linear(DIM, DIM)
            self.norm1, self.norm2 = nn.LayerNorm(DIM), nn.LayerNorm(DIM)
            self.ffn1, self.ffn2 = nn.Linear(DIM, FFN), nn.Linear(FFN, DIM)

        def forward(self, x):
            q, k, v = self.qkv(x).unflatten(-1, (3, HEADS, DIM // HEADS)).permute(2, 0, 3, 1, 4)
            attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
            x = self.norm1(x + self.out(attended))
            return self.norm2(x + self.ffn2(F.relu(self.ffn1(x))))

    return nn.Sequential(*(Block() for _ in range(BLOCKS))).eval()


def torch_encoder():
    from torch import nn

    layer = nn.TransformerEncoderLayer(DIM, HEADS, FFN, dropout=0.0, batch_first=True, norm_first=False)
    return nn.TransformerEncoder(layer, BLOCKS, enable_nested_tensor=False).eval()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=5, help="timed calls per contender and round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads, both libraries")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf
    import torch

    torch.set_num_threads(args.threads)
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    import keras

    import kerastorch_magic as k2t

    keras.utils.set_random_seed(0)
    model = keras_encoder(args.seq)
    conversion = k2t.convert(model, class_name="Encoder")
    generated = conversion.build(device=args.device)
    data = np.random.default_rng(0).normal(size=(args.batch, args.seq, DIM)).astype("float32")
    x = torch.from_numpy(data).to(args.device)
    sdpa, encoder = hand_written_sdpa().to(args.device), torch_encoder().to(args.device)

    with torch.inference_mode():
        error = float((generated(x).cpu() - torch.from_numpy(np.asarray(model(data)))).abs().max())
    print(f"generated vs Keras: max abs difference {error:.2e} (same weights, same input)")

    def torch_call(module, autocast=False):
        def run():
            with torch.inference_mode(), torch.autocast(args.device, torch.bfloat16, enabled=autocast):
                module(x)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()

        return run

    contenders = {
        "generated": torch_call(generated),
        "sdpa (fused q/k/v)": torch_call(sdpa),
        "nn.TransformerEncoder": torch_call(encoder),
    }
    if keras.backend.backend() == "tensorflow" and args.device == "cpu":
        compiled = tf.function(lambda t: model(t, training=False), jit_compile=False)
        tensor = tf.constant(data)
        contenders["keras (TF)"] = lambda: compiled(tensor).numpy()
    if args.device.startswith("cuda"):
        contenders["generated bf16"] = torch_call(generated, autocast=True)
        contenders["sdpa bf16"] = torch_call(sdpa, autocast=True)
    for run in contenders.values():  # warm-up: graph tracing, allocator, oneDNN primitives
        timings(run, 3)
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, run in contenders.items():
            times[name] += timings(run, args.repeat)
    medians = {name: statistics.median(values) * 1e3 for name, values in times.items()}
    shape = f"batch {args.batch}, seq {args.seq}; {args.threads} threads, {args.device}"
    print(f"encoder: {BLOCKS} blocks, dim {DIM}, {HEADS} heads, FFN {FFN}; {shape}; "
          f"median of {args.rounds}x{args.repeat} interleaved calls")  # fmt: skip
    for name, value in medians.items():
        print(f"  {name:24s} {value:8.1f} ms")
    fastest = min(medians["sdpa (fused q/k/v)"], medians["nn.TransformerEncoder"])
    ratio = fastest / medians["generated"]
    print(f"generated speed vs the fastest hand-written torch: {ratio:.2f}x (target >= 0.95x)")
    if "keras (TF)" in medians:
        print(f"generated speed vs Keras/TF: {medians['keras (TF)'] / medians['generated']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
