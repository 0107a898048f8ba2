"""Time the vanilla field's backward through one ReLU layer, unlinked and linked (issue 5).

    python bench/bench_fused_mlp.py --out OUT

For each layer shape of the paper's fine pass (P = 2048 rays x 192 samples; the 256 x 256
trunk layers, the skip layer's 320-column input, the 128-wide colour layers):

* ``unlinked``: ReLU's mask and bias sums (fused_mlp.relu_bias_grad), then the input-gradient
  matmul (what a layer without a ReluLink runs);
* ``linked BM/BN/BK/warps/stages``: the one kernel that does both (fused_mlp.input_grad_relu,
  Triton) under each block configuration tried; fused_mlp.INPUT_GRAD_BLOCKS is the default.

Writes OUT/fused_mlp.json (ms per call, GB/s of the linked kernel's 3 passes) and prints it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

CONFIGS = [(128, 128, 64, 8, 3), (128, 128, 64, 4, 3), (128, 64, 64, 4, 3), (64, 128, 64, 4, 3),
           (128, 256, 64, 8, 3), (256, 128, 64, 8, 3), (128, 128, 128, 8, 2)]
SHAPES = [(256, 256, 256), (256, 320, 256), (128, 128, 128)]  # (N, K, ReLU columns): g (P, N), w (N, K), x (P, K)


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
            return gp @ w, gb

        row = {"shape": [P, N, K], "unlinked_ms": round(do_bench(unlinked), 4), "linked_ms": {}}
        ref = (g.float() @ w.float())
        ref[:, :cols] *= x[:, :cols] > 0
        for blocks in CONFIGS:
            name = "/".join(map(str, blocks))
            try:
                gx, _ = fused_mlp._launch_input_grad(g, w, x, cols, blocks)
                err = float((gx.float() - ref).abs().max())
                ms = do_bench(lambda b=blocks: fused_mlp._launch_input_grad(g, w, x, cols, b))
            except Exception as exc:  # noqa: BLE001 - a configuration this GPU cannot run
                row["linked_ms"][name] = f"failed: {type(exc).__name__}"
                continue
            gbytes = 2 * (P * N + 2 * P * K) / 1e9
            row["linked_ms"][name] = {"ms": round(ms, 4), "GB_per_s": round(gbytes / ms * 1e3), "max_err": round(err, 4)}
        print(json.dumps(row), file=sys.stderr, flush=True)
        rows.append(row)
    result = {"device": torch.cuda.get_device_name(dev), "default": list(fused_mlp.INPUT_GRAD_BLOCKS), "rows": rows}
    (args.out / "fused_mlp.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
