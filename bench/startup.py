"""6. Start-up: `batchrun validate jobs/eval.yaml` wall time, and the CLI's heaviest imports.

Target: validate under 0.3 s. httpx, aiohttp, tqdm and asyncio must not load for validate.
"""

from __future__ import annotations

import subprocess
import sys
import time

from common import HERE, machine, median, verdict

JOB = HERE.parent / "jobs" / "eval.yaml"


def main() -> None:
    print(f"start-up: batchrun validate {JOB.relative_to(HERE.parent)}; {machine()}")
    times = []
    for _ in range(7):
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", "batchrun", "validate", str(JOB)], check=True)
        times.append(time.monotonic() - started)
    value = median(times)
    print(f"  wall time median of 7: {value:.3f} s -> {verdict(value < 0.3)} (target < 0.3 s)")
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "batchrun", "validate", str(JOB)],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = []
    for line in result.stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            _self_us, cumulative_us, name = line[len("import time:") :].split("|")
            if cumulative_us.strip().isdigit():
                rows.append((int(cumulative_us), name[1:]))  # indentation marks nested imports
    total = sum(c for c, n in rows if not n.startswith(" "))
    print(f"  imports: {total / 1000:.0f} ms in all; heaviest top-level:")
    for cumulative, name in sorted((r for r in rows if not r[1].startswith(" ")), reverse=True)[:8]:
        print(f"    {cumulative / 1000:6.1f} ms  {name}")
    loaded = {name.strip() for _, name in rows}
    heavy = sorted(loaded & {"httpx", "aiohttp", "tqdm", "tenacity", "httpx_aiohttp", "asyncio"})
    print(f"  network and event-loop imports loaded by validate: {heavy or 'none'} -> {verdict(not heavy)}")


if __name__ == "__main__":
    main()
