"""A small, fast slice of benchmarks/fuzz_inputs.py: mutated checkpoints, videos and list files through
inspect-checkpoint and check-videos end in one-line errors (or work): no traceback, no hang, no file lost."""
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_fuzz_smoke():
    cmd = [sys.executable, str(ROOT / "benchmarks" / "fuzz_inputs.py"), "--repeats", "1", "--max-cases", "24",
           "--kinds", "checkpoint,video,list", "--commands", "inspect-checkpoint,check-videos", "--seed", "3"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    row = re.search(r"^all\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$", p.stdout, re.M)
    assert row, p.stdout[-3000:] + p.stderr[-3000:]
    cases, ok, refused, crash, hang, lost = map(int, row.groups())
    assert cases == 24 and ok + refused == cases, p.stdout[-3000:]
    assert (crash, hang, lost) == (0, 0, 0) and p.returncode == 0
    assert "inspect-checkpoint" in p.stdout and "check-videos" in p.stdout
