"""Print the fused_mlp.layer_grads block configuration with the least total time over the
shapes of OUT/fused_mlp.json (bench_fused_mlp.py), as bench_vanilla_step.py --blocks takes it.

    python bench/best_blocks.py OUT/fused_mlp.json
"""

import json
import sys

rows = json.load(open(sys.argv[1]))["rows"]
names = [k for k in rows[0] if k.startswith("dual ")]
total = {k: sum(r[k]["ms"] for r in rows) for k in names if all(isinstance(r.get(k), dict) for r in rows)}
print(min(total, key=total.get)[len("dual "):])
