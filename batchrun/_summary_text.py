"""A run's summary as text (the terminal) and Markdown (the CI step summary)."""

from __future__ import annotations

import shlex
from pathlib import Path

from ._cost_text import batch_hold_lines, cost_text, held_note, key_gap_lines
from ._formats import md_code, md_text, ms, one_line, pct, vars_text
from ._scrub import hide_keys
from ._summary_types import GroupFigures, Summary


def render_cache(summary: Summary) -> str | None:
    cache = summary.get("cache")
    if not cache:
        return None
    bound = cache.get("saved_estimated_usd")
    more = f", up to ${bound:.6f} more (hits whose cost was only estimated)" if bound else ""
    return f"cache: {cache['hits']} hit(s), {cache['misses']} miss(es), ${cache['saved_usd']:.6f} saved{more}"


def _fmt_rate_ci(group: GroupFigures) -> str:
    """A pass rate with its Wilson 95% interval: 90.0% [84.2-93.8]."""
    ci = group.get("pass_rate_ci95")
    rate = pct(group["pass_rate"])
    return rate if not ci else f"{rate} [{ci[0] * 100:.1f}-{ci[1] * 100:.1f}]"


def _grading_lines(summary: Summary) -> list[str]:
    """Judging cost, undecided rows, and items across repeats: the same in text and Markdown."""
    total = summary["total"]
    lines = []
    unsure = total.get("judge_cost_unknown_rows")
    if total.get("judge_cost_usd") or unsure:
        # "+?": a grader's attempt of unknown cost (a kill -9 cut it off): a lower bound.
        judging = f"judging: ${total['judge_cost_usd']:.6f}{'+?' if unsure else ''}"
        if summary.get("judging_regraded"):  # not the run's spend: its answers and this grading (break68 F2)
            lines.append(
                f"{judging}, as graded now (of ${cost_text(total)}: the answers as recorded, and their grading: "
                "bought now, or kept where the checks are those graded)"
            )
        else:
            lines.append(f"{judging} (of ${cost_text(total)} spent)")
        # A cheap model graded by dear ones read 10x dearer than its answers (break68 F5).
        lines[-1] += "; each model's cost counts the grading of its rows"
    if total.get("undecided"):
        lines.append(
            # Not always a failure: a stop before the grader was asked leaves it ungraded too (verify38 N4).
            f"undecided: {total['undecided']} row(s) with a check not graded (its grader failed, or a stop came "
            "before it was asked, or the endpoint did not report the cost or tokens it checks; neither pass nor "
            "fail, not in the pass rate)"
        )
    items = summary.get("items")
    if items:
        gate = items["gate"]
        rule = f"at least {gate['min']} of {gate['of']} repeats" if gate else "every repeat"
        lines.append(
            f"items: {items['count']}, {items['passed']} pass ({rule}), {items['failed']} fail, "
            f"{items['undecided']} undecided"
            + (f", {items['unchecked']} without checks" if items.get("unchecked") else "")
            + f"; flaky (passed and failed across repeats): {items['flaky_count']}"
        )
        for item in items["flaky"]:
            lines.append(
                f"  flaky {item['model']} / {item['prompt_id']} [{vars_text(item['vars'])}]: "
                f"passed {item['passed']} of {item['graded']}"
            )
    return lines


def _table_rows(summary: Summary) -> tuple[list[str], list[list[str]]]:
    header = [
        "model",
        "ok",
        "error",
        "skipped",
        "tokens",
        "cost $",
        "p50 ms",
        "p95 ms",
        "tries/row",
        "pass [95% CI]",
        "score",
    ]
    rows = []
    for name, g in [*summary["models"].items(), ("TOTAL", summary["total"])]:
        rows.append(
            [
                one_line(name),  # a results file's model id with a newline forged log lines (break59 F7)
                str(g["ok"]),
                str(g["error"]),
                str(g["skipped"]),
                f"{g['prompt_tokens'] + g['completion_tokens']:,}",
                # "+?": some rows' costs are unknown, so the figure is a lower bound, not a total.
                cost_text(g),
                ms(g["latency_p50_ms"]),
                ms(g["latency_p95_ms"]),
                "-" if g["attempts_per_row"] is None else f"{g['attempts_per_row']:.2f}",
                _fmt_rate_ci(g),
                pct(g["mean_score"]),
            ]
        )
    return header, rows


def render_text(summary: Summary) -> str:
    header, rows = _table_rows(summary)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        for row in [header, *rows]
    ]
    if (by_prompt := _prompt_rates(summary)) is not None:
        lines.append(by_prompt)
    if summary["worst_prompts"]:
        lines.append("worst prompts: " + ", ".join(map(one_line, summary["worst_prompts"])))
    for example in summary["failing_examples"]:
        where = f"{one_line(example['model'])} / {one_line(example['prompt_id'])} [{one_line(example['id'][:8])}]"
        lines.append(f"  failed {where}: {one_line(example['why'])}")
    failing = summary["total"]["checked"] - summary["total"]["passed"]
    if failing > len(summary["failing_examples"]):
        lines.append(
            f"  ... and {failing - len(summary['failing_examples'])} more failing row(s): "
            "the rows' `checks` in the results file say why (`--json` lists these first ones too)"
        )
    lines += _grading_lines(summary) + _row_lines(summary)
    cache_line = render_cache(summary)
    if cache_line:
        lines.append(cache_line)
    lines += _spend_lines(summary)
    lines += key_gap_lines(summary)
    lines += batch_hold_lines(summary)
    lines += _reconciliation_lines(summary)
    key = summary.get("isolated_key")
    if key and not key["hash_prefix"]:
        # No reply named a key: "NOT removed" sent the operator hunting for one (verify64 F10).
        lines.append(f"per-run key {key['label']}: none known (the run stopped before a reply named one)")
    elif key:
        charged = "unknown" if key["usage_usd"] is None else f"${key['usage_usd']:.6f}"
        lines.append(
            f"per-run key {key['label']} ({key['hash_prefix']}...): charged {charged}, "
            f"{key['removed'] or 'NOT removed'}"
        )
    if summary.get("routing_warning"):
        lines.append(f"warning: {summary['routing_warning']}")
    if summary.get("stop"):
        lines.append(_stop_line(summary))
    if summary.get("unread_lines"):
        lines.append(_unread(summary))
    if summary.get("output"):
        # A file named like a key (verify20 V7), or with a newline in its name (verify21 V18).
        shown = hide_keys(str(summary["output"])).replace("\n", "\\n")
        # A file deleted (or its folder) under the run is named as gone, not as where the rows are
        # (out-177 F2b); only a path the summary holds whole can be looked for from anywhere.
        output = Path(summary["output"])
        gone = output.is_absolute() and not output.exists()
        lines.append(f"results: {shown}" + (" (no longer there: deleted or moved)" if gone else ""))
    return "\n".join(lines)


def _prompt_rates(summary: Summary) -> str | None:
    rates = [
        f"{one_line(name)} {_fmt_rate_ci(g)}" for name, g in summary["prompts"].items() if g["pass_rate"] is not None
    ]
    return "pass rate by prompt: " + ", ".join(rates) if rates else None


def _row_lines(summary: Summary) -> list[str]:
    """Rows in error and rows skipped, by kind."""
    lines = []
    if summary["error_kinds"]:
        # An error kind may be a server's availability code: one line (break53 F3).
        lines.append("errors: " + ", ".join(f"{one_line(k)} {v}" for k, v in sorted(summary["error_kinds"].items())))
    if summary["skip_reasons"]:
        lines.append("skipped: " + ", ".join(f"{one_line(k)} {v}" for k, v in sorted(summary["skip_reasons"].items())))
    return lines


# What lets a resume of a run stopped for money on: the stop line said only how much was left (out-116 F4).
# `{resume}`: --resume with the file's name (out-153 F2: after `-o night.jsonl`, a bare --resume
# took up an older run of the job's folder).
_ROOM = {
    "budget": "{resume} goes on with a larger budget: run.budget_usd or --budget, whichever is the smaller",
    "credits": "{resume} goes on once the key's limit or the account's balance has room",
    # A Ctrl-C said how far it got, not how to go on (out-152 F5).
    "interrupted": "{resume} runs the rows it did not answer",
    "deadline": "{resume} runs the rows it did not answer",
}
_REGRADE_ROOM = {
    "budget": "report --job again re-grades them with a larger budget (run.budget_usd or --budget, the smaller)",
    "credits": "report --job again re-grades them once the key's limit or the account's balance has room",
    "interrupted": "report --job again re-grades them",
    "deadline": "report --job again re-grades them",
}


def _stop_line(summary: Summary) -> str:
    message = summary.get("stop_message")  # a server's 401 or 402 message
    stop = str(summary["stop"])
    doubted = summary.get("cost_doubted_rows") or 0
    # What was counted may not have been charged: the stop is no proof the money ran out (out-117 F5).
    doubt = (
        f"{doubted} row(s) count a charge in doubt, which --resume looks up first" if doubted and stop in _ROOM else ""
    )
    # `report --job` has no --resume, and writes no verdict back: it is run again (out-150 1).
    output, shard = summary.get("output"), summary.get("shard")
    resume = f"--resume -o {shlex.quote(one_line(output))}" if isinstance(output, str) and output else "--resume"
    if isinstance(shard, str) and shard:  # a shard's file is resumed as that shard (out-155 F4)
        resume += f" --shard {shlex.quote(shard)}"
    room = (_REGRADE_ROOM if summary.get("judging_regraded") else _ROOM).get(stop, "").format(resume=resume)
    said = "; ".join(part for part in (one_line(message) if message else "", doubt, room) if part)
    return f"stopped: {stop}" + (f" ({said})" if said else "")


def _spend_lines(summary: Summary) -> list[str]:
    """What this run spent, against its worst case and its budget. After a resume the file's rows
    cost more than this run spent: each figure says which it is."""
    lines = []
    if summary.get("estimate_usd") is not None:
        lines.append(
            f"this run: worst case ${summary['estimate_usd']:.6f}{'+?' if summary.get('estimate_unknown') else ''} "
            "(one attempt a row), "
            f"spent ${summary.get('spent_usd') or 0.0:.6f}"
        )
    if summary.get("spent_before_usd"):
        lines.append(
            f"earlier runs of this file spent ${summary['spent_before_usd']:.6f}; "
            f"all rows in the file cost ${cost_text(summary['total'])}{held_note(summary['total'])}"
        )
    budget = summary.get("budget_usd")
    if budget is not None:
        spent = summary.get("spent_usd") or 0.0
        # With no budget, or a larger one, the key's limit or the balance binds: not "budget" (out-152 F7).
        left = (
            "credit (the key's limit or the account's balance)" if summary.get("budget_from") == "credits" else "budget"
        )
        lines.append(
            f"{left} left for this {'re-grading' if summary.get('judging_regraded') else 'run'}: "
            f"spent ${spent:.6f} of ${budget:.6f} (${max(0.0, budget - spent):.6f} left)"
        )
    return lines


def _reconciliation_lines(summary: Summary) -> list[str]:
    rec = summary.get("reconciliation")
    if not rec:
        return []
    lines = []
    if rec.get("unknown_cost_attempts"):
        attributed = rec.get("unattributed_usd")
        lines.append(
            f"{rec['unknown_cost_attempts']} attempt(s) may have been billed at an unknown cost "
            f"(held at up to ${rec['unknown_cost_held_usd']:.6f})"
            + ("" if attributed is None else f"; the key's usage attributes ${attributed:.6f} to them")
        )
    if rec.get("resolved_after_record_attempts"):
        # Those rows were appended again with the cost (_late_costs): the records say it too.
        lines.append(
            f"{rec['resolved_after_record_attempts']} attempt(s) recorded with an unknown cost were looked up "
            f"after their rows were written: ${rec['resolved_after_record_usd']:.6f} "
            f"(their rows were written again with it; {summary['total'].get('cost_unknown_rows', 0)} row(s) "
            "still have an unknown cost)"
        )
    if rec.get("warning"):
        lines.append(f"warning: {rec['warning']}")
    return lines


def _unread(summary: Summary) -> str:
    count = summary.get("unread_lines")
    return f"unread: {count} line(s) of the file set aside or cut (see the warnings): a row may be missing"


def render_markdown(summary: Summary, title: str | None = None, verdict: tuple[int, list[str]] | None = None) -> str:
    """The step summary's Markdown: what the text summary says (break35 F2: no skips, no spend,
    no pass rate by prompt, no verdict), each block a paragraph or a list of its own (a bold
    line right after a list item was read as part of it); `verdict`: the exit code and why,
    which a red step shows nowhere else. Every text a run carries goes through md_text or md_code."""
    header, rows = _table_rows(summary)
    lines = [
        f"### {md_text(title or 'batchrun: ' + str(summary.get('job')))}",
        "",
        "| " + " | ".join(map(md_text, header)) + " |",
        "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(map(md_text, row)) + " |" for row in rows]
    if verdict is not None:
        code, reasons = verdict
        lines += ["", f"**Exit {code}:** " + ("; ".join(md_text(r) for r in reasons) or "ok")]
    by_prompt = _prompt_rates(summary)
    facts = [by_prompt] if by_prompt else []
    facts += _grading_lines(summary) + _row_lines(summary)
    if cache_line := render_cache(summary):
        facts.append(cache_line)
    facts += _spend_lines(summary)
    lines += ["", *(f"- {md_text(line.strip())}" for line in facts)] if facts else []
    if summary["worst_prompts"]:
        lines += ["", "**Worst prompts:** " + ", ".join(md_code(p) for p in summary["worst_prompts"])]
    if summary["failing_examples"]:
        lines.append("")
        for example in summary["failing_examples"]:
            lines.append(f"- {md_code(example['model'])} / {md_code(example['prompt_id'])}: {md_text(example['why'])}")
    notes = [f"**Warning:** {md_text(str(summary['routing_warning']))}"] if summary.get("routing_warning") else []
    notes += [f"**Cost:** {md_text(line)}" for line in key_gap_lines(summary) + batch_hold_lines(summary)]
    notes += [f"**Cost:** {md_text(line)}" for line in _reconciliation_lines(summary)]
    if summary.get("stop"):
        notes.append(f"**Stopped:** {md_text(_stop_line(summary)[len('stopped: ') :])}")
    if summary.get("unread_lines"):
        notes.append(f"**Warning:** {md_text(_unread(summary))}")
    for note in notes:
        lines += ["", note]
    return "\n".join(lines) + "\n"
