"""Time the vanilla field's backward through one ReLU layer, unlinked and linked (issue 5).

    python bench/bench_fused_mlp.py --out OUT

For each layer shape of the paper's fine pass (P = 2048 rays x 192 samples; the 256 x 256
trunk layers, the skip layer's 320-column input, the first colour layer's 288, the 128-wide
colour layers):

* ``unlinked``: ReLU's mask and bias sums (fused_mlp.relu_bias_grad), then the input- and
  weight-gradient matmuls (cuBLAS; what every layer ran before fused_mlp.layer_grads);
* ``dual BM/BN/warps/stages/load_t``: both gradients, the mask of the input's ReLU and its column
  sums from one read of g (fused_mlp.layer_grads, Triton), under each block configuration
  tried (fused_mlp.LAYER_GRAD_BLOCKS is the default).

Measured on an H100 (2026-12-06): unlinked 0.50 / 0.56 / 0.27 ms, dual 64/64/8/3 0.33 / 0.41 /
0.13 ms for the three shapes; a two-kernel variant (masked input gradient, then cuBLAS for
the weight gradient) took 0.46 / 0.61 / 0.20 and was dropped.

Writes OUT/fused_mlp.json (ms per call, with the largest error against float32 PyTorch:
absolute for the input gradient, relative for the weight gradient) and prints it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

DUAL = [(64, 64, 8, 3, False), (64, 64, 8, 3, True), (64, 32, 4, 3, False), (64, 32, 4, 3, True),
        (64, 32, 8, 3, True), (32, 64, 8, 3, True), (64, 64, 8, 4, True), (64, 64, 4, 3, True), (128, 32, 8, 3, False),
        (32, 64, 4, 4, False)]
SHAPES = [(256, 256, 256), (256, 320, 256), (128, 288, 256), (128, 128, 128)]  # (N, K, ReLU columns): g (P, N), w (N, K),
# x (P, K); as the field runs them, the input gradient only for the ReLU columns (the rest is a tail without one)


def main(argv=None) -> int:
    from triton.testing import do_bench

    from minerf_cli.nerf import fused_mlp

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("bench_out"))
    p.add_argument("--points", type=int, default=2048 * 192)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda")
    P = args.points
    rows = []
    for N, K, cols in SHAPES:
        g = torch.randn(P, N, device=dev, dtype=torch.bfloat16)
        w = torch.randn(N, K, device=dev, dtype=torch.bfloat16) / 16
        x = torch.relu(torch.randn(P, K, device=dev, dtype=torch.bfloat16))
        y = torch.relu(torch.randn(P, N, device=dev, dtype=torch.bfloat16))

        def unlinked():
            gp, gb = fused_mlp.relu_bias_grad(g, y)
            return gp @ w, gb, gp.t() @ x

        row = {"shape": [P, N, K], "unlinked_ms": round(do_bench(unlinked), 4)}
        ref = (g.float() @ w.float())
        ref[:, :cols] *= x[:, :cols] > 0
        ref_w = g.float().t() @ x.float()

        def attempt(name, run, check):
            try:
                err = check(run())
                row[name] = {"ms": round(do_bench(run), 4), "max_err": round(err, 4)}
            except Exception as exc:  # noqa: BLE001 - a configuration this GPU cannot run
                row[name] = f"failed: {type(exc).__name__}: {str(exc)[:120]}"

        for b in DUAL:
            attempt("dual " + "/".join(map(str, b)),
                    lambda b=b: fused_mlp._launch_layer_grads(g, w, x, cols, True, blocks=b, gx_cols=cols),
                    lambda out: max(float((out[0].float() - ref[:, :cols]).abs().max()), float((out[2] - ref_w).abs().max() / ref_w.abs().max())))
        print(json.dumps(row), file=sys.stderr, flush=True)
        rows.append(row)
    result = {"device": torch.cuda.get_device_name(dev), "default": list(fused_mlp.LAYER_GRAD_BLOCKS), "rows": rows}
    (args.out / "fused_mlp.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
