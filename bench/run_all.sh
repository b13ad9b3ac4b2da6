#!/usr/bin/env bash
# Every benchmark, in order; each prints its figures and a PASS/FALL-SHORT line per target.
set -euo pipefail
cd "$(dirname "$0")"
for script in throughput.py latency.py rate_limit.py memory.py resume_scan.py startup.py report_page.py streaming.py cache.py; do
  "${PYTHON:-python}" "$script"
  echo
done
