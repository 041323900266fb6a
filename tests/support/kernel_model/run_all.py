"""Every OS's kernel model, each in a fresh interpreter (two at a time): exits 1 if any failed.

python tests/support/kernel_model/run_all.py [NAME ...]
"""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from kernel_model import MODELS  # noqa: E402


def run(name: str) -> tuple[str, int, str]:
    done = subprocess.run([sys.executable, str(HERE / "suite.py"), name], capture_output=True, text=True, timeout=120)
    return name, done.returncode, done.stdout + done.stderr


def main() -> int:
    names = sys.argv[1:] or list(MODELS)
    start = time.monotonic()
    failed = []
    with ThreadPoolExecutor(2) as pool:
        for name, code, output in pool.map(run, names):
            last = output.strip().splitlines()[-1] if output.strip() else "(no output)"
            print(f"{'ok  ' if code == 0 else 'FAIL'} {last}", flush=True)
            if code:
                failed.append(name)
                print(output)
    print(f"kernel models: {len(names) - len(failed)}/{len(names)} passed in {time.monotonic() - start:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
