"""Self-contained HTML pages: `report --html` (one run) and `history --html` (runs over time).

A page is one file: the Vega, Vega-Lite and vega-embed JavaScript (bundled by vl-convert,
the Vega project's own packaging), the chart specifications, the styles and the data are
all inline. Its Content-Security-Policy forbids every fetch, so a page that tried to load
anything would fail loudly in the browser test rather than quietly need a network.

Pages are Jinja2 templates shipped in `batchrun/templates/` with autoescaping on: every
text that came from a model, a prompt or a dataset is escaped by the template engine, and
the chart data travels as JSON through `tojson`, which escapes `<`, `>` and `&`.

altair, vl-convert and Jinja2 are the optional extra `batchrun[report]` (vl-convert is a
large wheel); a missing one is a one-line error naming the extra.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._cost_text import cost_text, held_note
from ._exceptions import ConfigError
from ._failure_text import clip
from ._formats import utc_readable
from ._pricing import money
from ._report_data import PROMPT_CAP, ROW_CAP, TEXT_CAP, RunDigest, histogram
from ._report_file import write_report_file
from ._summary_beside import SummaryBeside
from ._summary_types import GroupFigures, Summary
from ._verdict import ExitCode

if TYPE_CHECKING:
    from ._charts import Chart

EXTRA_HINT = "pip install 'batchrun[report]'"


def require_report_extra() -> None:
    """Raise a one-line ConfigError naming the extra when a page library is missing."""
    for module in ("jinja2", "altair", "vl_convert"):
        try:
            __import__(module)
        except ImportError:
            raise ConfigError(
                f"HTML pages need the optional extra `report` ({module} is missing): {EXTRA_HINT}"
            ) from None


@functools.cache
def vega_bundle() -> str:
    """Vega + Vega-Lite + vega-embed as one script, for the Vega-Lite version altair writes.

    vl-convert bundles it once per process (a few seconds); the result is about 0.9 MB.
    """
    import altair
    import vl_convert

    major_minor = ".".join(altair.VEGALITE_VERSION.split(".")[:2])
    version = major_minor if major_minor in vl_convert.get_vegalite_versions() else None
    # The snippet puts the three libraries on `window`, where page.js finds them.
    snippet = "window.vegaEmbed = vegaEmbed; window.vega = vega; window.vegaLite = vegaLite;"
    bundle = vl_convert.javascript_bundle(snippet, vl_version=version)
    # The bundle goes inside a <script> element: no literal end tag may appear in it.
    return bundle.replace("</script", "<\\/script")


@functools.cache
def _environment() -> Any:
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("batchrun", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    # Unknown costs read as a lower bound ("+?") with the held amount, never as $0 (_cost_text).
    environment.globals.update(cost_text=cost_text, held_note=held_note)
    return environment


def render_page(template: str, charts: list[Chart], **context: Any) -> str:
    environment = _environment()
    return str(
        environment.get_template(template).render(
            charts=charts,
            specs={chart.id: chart.spec for chart in charts},
            vega_bundle=vega_bundle(),
            generated_at=utc_readable(time.time()),
            row_cap=ROW_CAP,
            text_cap=TEXT_CAP,
            **context,
        )
    )


def write_page(path: Path, html: str) -> None:
    write_report_file(path, html)


def _rate_rows(groups: dict[str, GroupFigures], field: str) -> list[dict[str, Any]]:
    rows = []
    for name, group in groups.items():
        interval = group.get("pass_rate_ci95")  # the summary's: with repeats, an item is one cluster
        if interval is None or not group["checked"]:
            continue
        rows.append(
            {
                field: name,
                "rate": group["passed"] / group["checked"],
                "low": interval[0],
                "high": interval[1],
                "passed": group["passed"],
                "checked": group["checked"],
            }
        )
    return rows


def report_charts(digest: RunDigest, summary: Summary) -> tuple[list[Chart], bool]:
    """The report's charts, and whether the per-prompt charts were cut to the worst PROMPT_CAP prompts."""
    from . import _charts

    charts = []
    model_rates = _rate_rows(summary["models"], "model")
    prompt_rates = sorted(_rate_rows(summary["prompts"], "prompt"), key=lambda r: (r["rate"], r["prompt"]))
    prompts_cut = len(prompt_rates) > PROMPT_CAP
    prompt_rates = prompt_rates[:PROMPT_CAP]
    if model_rates:
        charts.append(
            _charts.pass_rate_chart(
                model_rates,
                "model",
                "pass-by-model",
                "Share of each model's checked answers that passed every check; the whisker is the 95% "
                "Wilson interval.",
            )
        )
    if prompt_rates:
        charts.append(
            _charts.pass_rate_chart(
                prompt_rates,
                "prompt",
                "pass-by-prompt",
                "Share of each prompt's checked answers (all models) that passed, worst first, with the 95% "
                "Wilson interval.",
            )
        )
        shown = {row["prompt"] for row in prompt_rates}
        cells = [
            {"model": model, "prompt": prompt, "rate": passed / checked, "passed": passed, "checked": checked}
            for (model, prompt), (checked, passed) in sorted(digest.pairs.items())
            if prompt in shown and checked
        ]
        charts.append(_charts.heatmap_chart(cells))
    statuses = [
        {"model": name, "status": status, "rows": group[status]}
        for name, group in summary["models"].items()
        for status in ("ok", "error", "skipped")
        if group[status]
    ]
    if statuses:
        charts.append(_charts.status_chart(statuses))
        charts.append(
            _charts.cost_chart([part for n, g in summary["models"].items() for part in _charts.cost_parts(g, model=n)])
        )
    percentiles = [
        {"model": name, "percentile": label, "ms": ms}
        for name, group in summary["models"].items()
        for label, ms in (("p50", group["latency_p50_ms"]), ("p95", group["latency_p95_ms"]))
        if ms is not None
    ]
    if percentiles:
        charts.append(_charts.latency_percentile_chart(percentiles))
        charts.append(_charts.latency_histogram_chart(histogram(digest.latencies())))
    return charts, prompts_cut


def model_table(summary: Summary) -> list[dict[str, Any]]:
    """The per-model numbers under the charts (the charts' data, readable without them)."""
    table = []
    for name, group in [*summary["models"].items(), ("all models", summary["total"])]:
        table.append({"name": name, **group, "interval": group.get("pass_rate_ci95")})
    return table


Decided = tuple[int, list[str]]  # an exit code and its reasons


def _verdict(decided: Decided, gated: bool) -> dict[str, Any]:
    """The exit verdict shown in the header: the command's own, as its exit code and JUnit file
    say. Without --job, `report` gates no threshold: a page that decided one with default
    thresholds showed exit 0 for a night that exited 3, and exit 1 for one that exited 0
    (break62 F3); the page says what the verdict is of."""
    code, reasons = decided
    basis = (
        "the job's thresholds"
        if gated
        else "report without --job: no threshold is gated, only rows never answered (exit 12); "
        "report --job JOB.yaml gates the job's thresholds"
    )
    return {"code": int(code), "name": ExitCode(code).name.lower(), "reasons": reasons, "basis": basis}


def write_report(
    results: Path,
    output: Path,
    digest: RunDigest,
    summary: Summary,
    decided: Decided,
    gated: bool = True,
    beside: SummaryBeside | None = None,
) -> None:
    """Write the page of a run whose records `digest` took in while `summary` was built, and
    the summary beside them as the caller read it (None: read here)."""
    beside = SummaryBeside.read(results) if beside is None else beside
    html = report_page(digest, summary, results, _verdict(decided, gated), beside)
    write_page(output, html)


def report_page(
    digest: RunDigest,
    summary: Summary,
    source: Path,
    verdict: dict[str, Any],
    beside: SummaryBeside,
) -> str:
    run_meta = beside.run_summary()
    charts, prompts_cut = report_charts(digest, summary)
    return render_page(
        "report.html.j2",
        charts,
        summary=summary,
        source=str(source),
        digest=digest,
        verdict=verdict,
        budget_usd=run_meta.get("budget_usd"),
        run_spent=_recorded_spend(run_meta),
        # A resumed file: its budget is the last run's, what the runs before it left (out-158 F1:
        # all runs' spend over it read "171.9%" of a budget 70% spent).
        last_spent=money(run_meta.get("spent_usd")) or 0.0,
        spent_before=money(run_meta.get("spent_before_usd")) or 0.0,
        stop=run_meta.get("stop"),
        run_exit=_run_exit(beside),
        models=model_table(summary),
        prompt_cap=PROMPT_CAP,
        prompts_cut=prompts_cut,
        prompt_count=len(summary["prompts"]),
        table_models=sorted({row["model"] for row in digest.rows}),
    )


def _run_exit(beside: SummaryBeside) -> dict[str, Any] | None:
    """The exit code the run that wrote the summary gave, and why, as it keeps them (None when it
    does not, or not as a run writes them): a page made later without --job gates no threshold,
    and showed only "exit 0 (ok)" for a night that exited 3 (out-152 F2). Said as an earlier
    run's where a later one left no summary (a resume killed, or its summary not written: the
    page said "its last run exited 0" of a night that exited 11, out-169 F1), or where the file
    is not the one the summary saw."""
    run_meta = beside.run_summary()
    code, reasons = run_meta.get("exit_code"), run_meta.get("exit_reasons")
    if type(code) is not int or code not in set(ExitCode) or not isinstance(reasons, list):
        return None
    said = [clip(reason, 300) for reason in reasons if isinstance(reason, str)]
    if len(said) > _REASONS_SHOWN:  # the rest counted, not dropped unsaid (out-169 F2)
        said = [*said[:_REASONS_SHOWN], f"and {len(said) - _REASONS_SHOWN} more (in its summary)"]
    if beside.run_since():
        whose = "an earlier run's: a run since (its journal is beside the file) wrote no summary"
    elif not beside.vouched():
        whose = "the run's that wrote it, of the file as it was then: the file changed since"
    else:
        whose = None
    return {"code": code, "name": ExitCode(code).name.lower(), "reasons": said, "whose": whose}


_REASONS_SHOWN = 5


def _recorded_spend(run_meta: dict[str, Any]) -> float | None:
    """What the runs of the file spent, as its summary says: a re-grading report shows it apart from
    its own tables' costs, which are the answers and the grading bought now (break68 F2)."""
    spent = money(run_meta.get("spent_usd"))
    return None if spent is None else spent + (money(run_meta.get("spent_before_usd")) or 0.0)


def history_charts(history: dict[str, Any]) -> list[Chart]:
    from . import _charts

    runs = history["runs"]

    def per_model(key: str) -> list[dict[str, Any]]:
        return [
            {"run": run["label"], "model": name, key: model[key], "file": run["file"]}
            for run in runs
            for name, model in run["models"].items()
            if model[key] is not None
        ]

    changed: dict[str, list[str]] = {}
    for marker in history["markers"]:
        changed.setdefault(marker["run"], []).append(marker["what"])
    markers = [{"run": run, "what": "; ".join(whats)} for run, whats in changed.items()]
    pass_rows = [{**row, "rate": row.pop("pass_rate")} for row in per_model("pass_rate")]
    errors = per_model("error_rate") + [
        {"run": run["label"], "model": "all", "error_rate": run["error_rate"], "file": run["file"]}
        for run in runs
        if run["error_rate"] is not None
    ]
    charts = []
    if pass_rows:
        charts.append(_charts.history_pass_chart(pass_rows, markers))
    charts.append(
        _charts.history_cost_chart(
            [part for r in runs for part in _charts.cost_parts(r, run=r["label"], file=r["file"])]
        )
    )
    latency = per_model("p95_ms")
    if latency:
        charts.append(_charts.history_latency_chart(latency))
    if errors:
        charts.append(_charts.history_error_chart(errors))
    return charts


def write_history(history: dict[str, Any], output: Path) -> None:
    require_report_extra()
    flips = history["flips"]
    html = render_page(
        "history.html.j2",
        history_charts(history),
        history=history,
        flips=flips,
        flip_models=sorted({row["model"] for row in flips["rows"]}) if flips else [],
        flip_kinds=sorted({f"{row['before']} → {row['after']}" for row in flips["rows"]}) if flips else [],
        models=sorted({name for run in history["runs"] for name in run["models"]}),
    )
    write_page(output, html)
