#!/usr/bin/env bash
# On a machine with a GPU (under 8 minutes): the GPU-marked tests, WEMoE vs FusionBench's layout on CUDA (batch 64,
# without FusionBench itself) and 300 pocket adaptation steps on CUDA; prints one JSON line with what each gave.
set -uo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp -d)
start=$(date +%s)
timeout 240 python -m pytest -m gpu tests/adaptation/test_cuda.py -q -p no:cacheprovider >"$log/tests.txt" 2>&1; tests_rc=$?
timeout 120 python bench/moe_vs_fusionbench.py --device cuda --batch 64 --no-fusionbench >"$log/moe.txt" 2>&1; moe_rc=$?
timeout 120 python bench/adapt_speed.py --device cuda --steps 300 >"$log/adapt.txt" 2>&1; adapt_rc=$?
python - "$log" "$tests_rc" "$moe_rc" "$adapt_rc" "$(( $(date +%s) - start ))" <<'PY'
import json, sys
from pathlib import Path

log, tests_rc, moe_rc, adapt_rc, seconds = sys.argv[1], *map(int, sys.argv[2:])
def tail(name, n=3):
    return [line for line in Path(log, name).read_text(errors="replace").splitlines() if line.strip()][-n:]
print(json.dumps({"ok": tests_rc == moe_rc == adapt_rc == 0, "seconds": seconds,
                  "tests": {"rc": tests_rc, "tail": tail("tests.txt", 1)},
                  "moe_vs_fusionbench": {"rc": moe_rc, "tail": tail("moe.txt")},
                  "adapt_speed": {"rc": adapt_rc, "tail": tail("adapt.txt")}}))
PY
