"""The help's epilog: every command in a line, and the exit codes."""

from __future__ import annotations

from .._verdict import EXIT_CODE_TABLE

EPILOG = f"""commands:
  batchrun JOB.yaml [options]        run a job (same as `batchrun run JOB.yaml`)
  batchrun validate JOB.yaml...      schema and semantic checks, no network
  batchrun plan JOB.yaml             matrix size; with a key or --simulate, worst-case cost vs budget and credit
  batchrun simulate [--port P]       serve the built-in OpenRouter simulator
  batchrun report RESULTS.jsonl      summary of a results file (--html OUT.html: a self-contained page)
  batchrun history [DIR | RUN...]    trends across runs of a job (--html OUT.html, --markdown)
  batchrun diff A.jsonl B.jsonl      what changed between two runs
  batchrun merge OUT.jsonl SHARD...  combine shard files of one job
  batchrun cache explain JOB.yaml    hit or miss per row, and for a miss what changed
  batchrun cache stats|prune|clear   the response cache's size, hit rates, upkeep
  batchrun batches list|cancel|adopt|release RESULTS.jsonl   a batch-mode run's batches

exit codes:
{EXIT_CODE_TABLE}
"""
