"""`diff` as text and Markdown: the lines that say what changed (_diff computes it)."""

from __future__ import annotations

from typing import Any

from ._formats import md_text, one_line, pct, vars_text
from ._rate_tests import TEST_WORDS

MAX_FLIPS_SHOWN = 20


def _rate_line(label: str, rate: dict[str, Any]) -> str:
    verdict = (
        ""
        if rate["p_value"] is None
        else (
            f" ({TEST_WORDS.get(str(rate.get('test')), '')}p={rate['p_value']:.3g}, "
            f"{'significant' if rate['significant'] else 'not significant'})"
        )
    )
    # A drop the overall rate hides (new easy rows; a rate that rounds alike): said (break54 F2).
    hidden = rate.get("dropped") and not (rate["significant"] and (rate["change"] or 0) < 0)
    fell = f"; rows fell: a significant drop (p={rate['drop_p_value']:.3g})" if hidden else ""
    return f"{label}{pct(rate['before'])} -> {pct(rate['after'])}{verdict}{fell}"


def _rows_line(diff: dict[str, Any]) -> list[str]:
    rows = diff["rows"]
    edited = (
        [
            f"{rows['requests_changed']} row(s) of both runs asked another request in the second (the job was edited "
            "between them): their verdicts are compared all the same"
        ]
        if rows.get("requests_changed")
        else []
    )
    if rows.get("job_edited"):
        edited.append(
            f"the job was edited between the runs (its file's or its checks' fingerprint differs) while "
            f"{rows['job_edited']} row(s) of both asked the same request: if a check, a grader or a rubric changed, "
            "their verdicts changed with it, not with the model"
        )
    if rows.get("cached_after"):
        edited.append(
            f"{rows['cached_after']} row(s) of the second run were answered from the response cache"
            + (
                f", {rows['replayed']} of them the first run's own answers (the same generation): their verdicts "
                "cannot have changed with the model"
                if rows.get("replayed")
                else ""
            )
        )
    if not (rows["only_before"] or rows["only_after"] or rows["passes_without_verdict"]):
        return edited
    line = (
        f"rows: {rows['before']} -> {rows['after']}: {rows['only_before']} only in the first run, "
        f"{rows['only_after']} only in the second; {rows['passes_without_verdict']} pass(es) of the first run "
        "without a verdict in the second (skipped, undecided or gone; the paired test takes the rows both "
        "runs graded, and the rows one run alone graded are tested apart when each run has some)"
    )
    if rows.get("missing_decide") == "significant":
        line += "; counted as failures they would make a significant drop: a regression"
    elif diff["rows_missing"]:
        line += "; with --strict, rows of the first run that the second lacks are a regression"
    return [line, *edited]


def _change_lines(diff: dict[str, Any]) -> list[str]:
    lines = [*_rows_line(diff), _rate_line("pass rate ", diff["pass_rate"])]
    for label, key in (("model", "models_pass_rate"), ("prompt", "prompts_pass_rate")):
        for name, rate in diff[key].items():
            if rate["change"]:
                lines.append(_rate_line(f"{label} {name}: ", rate))
    for kind, label in (("pass_to_fail", "every repeat pass -> fail"), ("fail_to_pass", "every repeat fail -> pass")):
        items = diff["item_flips"][kind]
        if items:
            lines.append(f"items, {label}: {len(items)}")
            lines += [
                f"  {i['model']} / {i['prompt_id']} [{vars_text(i['vars'], 200)}]: {i['before']} -> {i['after']}"
                for i in items[:MAX_FLIPS_SHOWN]
            ]
    for kind, label in (
        ("pass_to_fail", "pass -> fail"),
        ("fail_to_pass", "fail -> pass"),
        ("pass_to_ungraded", "pass -> no verdict"),
    ):
        rows = diff["flips"][kind]
        if rows:
            lines.append(f"{label}: {len(rows)} row(s)")
            # A row that now passes, under the first run's reason, read as a failure (break68 F7).
            was = "it had failed: " if kind == "fail_to_pass" else ""
            lines += [
                f"  {r['model']} / {r['prompt_id']} [{r['id'][:8]}]: {was}{r['why']}" for r in rows[:MAX_FLIPS_SHOWN]
            ]
    for name, model in diff["models"].items():
        if model["status"] != "both":
            lines.append(f"model {name}: {model['status']}")
            continue
        notes = []
        if model.get("started_erroring"):
            notes.append("started erroring")
        if model.get("stopped_grading"):
            notes.append("no passing row graded (every row that could pass undecided, errored or skipped)")
        if model.get("stopped_passing"):
            notes.append("passed every graded row before, fails every one now")
        if "cost_unknown_rows" in model:
            notes.append(
                f"cost {model['cost_before']} -> {model['cost_after']} $ (unknown costs: the change is not known)"
            )
        elif model.get("cost_change_usd"):
            notes.append(f"cost {model['cost_change_usd']:+.6f} $")
        if abs(model.get("latency_p50_change_ms") or 0) >= 0.5:  # shown to the ms: "-0 ms" was a change of 0.3
            notes.append(f"p50 latency {model['latency_p50_change_ms']:+.0f} ms")
        if "answered_by" in model:
            notes.append(
                f"answered by {', '.join(model['answered_by']['before'])} -> {', '.join(model['answered_by']['after'])}"
            )
        if notes:
            lines.append(f"model {name}: " + "; ".join(notes))
    return lines


def render_diff_text(diff: dict[str, Any]) -> str:
    return "\n".join(map(one_line, _change_lines(diff)))  # a server's text is one line (break53 F3)


def render_diff_markdown(diff: dict[str, Any]) -> str:
    return (
        # md_text: a variable's `<img onerror>` or `](` is text, not HTML or a link, in a step summary.
        f"### batchrun diff: {md_text(str(diff['job']))}\n\n"
        + "".join(f"**Not what its run wrote:** {md_text(words)}\n\n" for words in diff.get("edited", ()))
        + "".join(f"**No verdict yet:** {md_text(words)}\n\n" for words in diff.get("awaiting", ()))
        + "\n".join(f"- {md_text(line.strip())}" for line in _change_lines(diff))
        + "\n"
    )
