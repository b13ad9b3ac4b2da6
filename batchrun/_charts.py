"""The charts of the report and history pages, as Vega-Lite specifications built with altair.

Each function takes aggregated data (a few rows per model, prompt or run, never per
result row) and returns a `Chart`: an id, a title, one sentence saying what it shows, and
the Vega-Lite spec that vega-embed draws in the page. altair validates each spec against
the Vega-Lite schema when it is built, so a malformed chart fails here, not in a browser.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import altair as alt
import orjson

PERCENT = alt.Axis(format="%")
PERCENT_LEGEND = alt.Legend(format="%", title="pass rate")


@dataclass(frozen=True)
class Chart:
    id: str
    title: str
    caption: str
    spec: dict[str, Any]


ROWS, MARKERS = alt.NamedData(name="rows"), alt.NamedData(name="markers")


@functools.lru_cache(maxsize=64)
def _built(build: Callable[..., alt.TopLevelMixin], *args: Any) -> bytes:
    """The Vega-Lite spec of `build(*args)`, as JSON. It depends on these arguments only (the
    data is named, and joins it later), and altair takes ~30 ms to build and validate one: a
    process writing many pages (`history`, the tests) builds each chart once."""
    return orjson.dumps(build(*args).to_dict())


def _spec(build: Callable[..., alt.TopLevelMixin], *args: Any, **datasets: list[dict[str, Any]]) -> dict[str, Any]:
    """The chart's Vega-Lite spec (a copy of its own). Its data is named, and the values join
    the spec after altair has validated it: validating them as inline data cost about 10 ms a
    row, and a report of 2,000 models took 17 s and 650 MB (break21 R28)."""
    spec: dict[str, Any] = orjson.loads(_built(build, *args))
    spec["datasets"] = datasets
    spec.pop("$schema", None)  # a URL: the page never fetches it, and it is noise offline
    # Model ids are long ("mistralai/mistral-small-3.1-24b-instruct"): room for them whole.
    spec.setdefault("config", {}).update({"legend": {"labelLimit": 320}, "axis": {"labelLimit": 320}})
    return spec


def _rate_chart(field: str, title: str) -> alt.TopLevelMixin:
    """Pass rate bars per `field`, with the Wilson 95% interval drawn as an error bar."""
    base = alt.Chart(ROWS).encode(y=alt.Y(f"{field}:N", sort=None, title=None))
    tooltip = [
        alt.Tooltip(f"{field}:N"),
        alt.Tooltip("rate:Q", format=".1%", title="pass rate"),
        alt.Tooltip("low:Q", format=".1%", title="95% low"),
        alt.Tooltip("high:Q", format=".1%", title="95% high"),
        alt.Tooltip("passed:Q"),
        alt.Tooltip("checked:Q"),
    ]
    bars = base.mark_bar(color="#4c78a8").encode(
        x=alt.X("rate:Q", scale=alt.Scale(domain=[0, 1]), axis=PERCENT, title=title), tooltip=tooltip
    )
    interval = base.mark_errorbar(ticks=True, color="#222").encode(x=alt.X("low:Q", title=title), x2="high:Q")
    return alt.layer(bars, interval).properties(width="container")


def pass_rate_chart(rows: list[dict[str, Any]], field: str, chart_id: str, caption: str) -> Chart:
    title = f"Pass rate per {field}"
    return Chart(chart_id, title, caption, _spec(_rate_chart, field, "pass rate (95% interval)", rows=rows))


def _heatmap() -> alt.TopLevelMixin:
    base = alt.Chart(ROWS).encode(
        x=alt.X("prompt:N", title=None, axis=alt.Axis(labelAngle=-30)), y=alt.Y("model:N", title=None)
    )
    cells = base.mark_rect().encode(
        color=alt.Color("rate:Q", scale=alt.Scale(domain=[0, 1], scheme="redyellowgreen"), legend=PERCENT_LEGEND),
        tooltip=["model:N", "prompt:N", alt.Tooltip("rate:Q", format=".1%"), "passed:Q", "checked:Q"],
    )
    labels = base.mark_text(fontSize=11).encode(
        text=alt.Text("rate:Q", format=".0%"),
        color=alt.condition("datum.rate > 0.8 || datum.rate < 0.2", alt.value("white"), alt.value("black")),
    )
    return alt.layer(cells, labels).properties(width="container")


def heatmap_chart(rows: list[dict[str, Any]]) -> Chart:
    return Chart(
        "pass-heatmap",
        "Pass rate per model and prompt",
        "Each cell is the share of one model's checked answers to one prompt that passed every check.",
        _spec(_heatmap, rows=rows),
    )


def _status() -> alt.TopLevelMixin:
    chart: alt.TopLevelMixin = (
        alt.Chart(ROWS)
        .mark_bar()
        .encode(
            y=alt.Y("model:N", title=None),
            x=alt.X("rows:Q", stack="zero", title="rows"),
            color=alt.Color(
                "status:N",
                scale=alt.Scale(domain=["ok", "error", "skipped"], range=["#54a24b", "#e45756", "#bab0ac"]),
            ),
            tooltip=["model:N", "status:N", "rows:Q"],
        )
        .properties(width="container")
    )
    return chart


def status_chart(rows: list[dict[str, Any]]) -> Chart:
    return Chart(
        "status-by-model",
        "Rows per model by status",
        "How many of each model's rows were answered (ok), ended in an error, or were skipped.",
        _spec(_status, rows=rows),
    )


# A cost nobody reported is never drawn as $0 (break25 F5: a zero bar, "$0.000000", beside a
# table saying "0.000000+? (held $0.000212)"): what is held for it stands beside what is known.
BILLED, HELD = "billed", "held: cost unknown (worst case)"
_COST_PARTS = alt.Color("part:N", title=None, scale=alt.Scale(domain=[BILLED, HELD], range=["#f58518", "#bab0ac"]))


def cost_parts(group: Mapping[str, Any], **keys: Any) -> list[dict[str, Any]]:
    """A summary group's cost as the bars' parts: what was billed, and what is held for rows
    whose cost is unknown."""
    unknown = group.get("cost_unknown_rows") or 0
    parts = [{**keys, "part": BILLED, "usd": group["cost_usd"], "rows": group["rows"], "unknown_rows": unknown}]
    if unknown:
        held = group.get("cost_held_usd") or 0.0
        parts.append({**keys, "part": HELD, "usd": held, "rows": group["rows"], "unknown_rows": unknown})
    return parts


def _cost_tooltip(*keys: str) -> list[Any]:
    return [*keys, "part:N", alt.Tooltip("usd:Q", format="$.6f", title="USD"), "rows:Q", "unknown_rows:Q"]


def _cost() -> alt.TopLevelMixin:
    chart: alt.TopLevelMixin = (
        alt.Chart(ROWS)
        .mark_bar()
        .encode(
            y=alt.Y("model:N", title=None),
            x=alt.X("sum(usd):Q", title="USD billed, and held where unknown"),
            color=_COST_PARTS,
            tooltip=_cost_tooltip("model:N"),
        )
        .properties(width="container")
    )
    return chart


def cost_chart(rows: list[dict[str, Any]]) -> Chart:
    return Chart(
        "cost-by-model",
        "Cost per model",
        "The USD each model's rows were billed in this run, the grading of its rows by judge models "
        "included (usage.cost as the endpoint reported it); "
        "where a cost is unknown, the worst case held for it, in grey.",
        _spec(_cost, rows=rows),
    )


def _latency_percentiles() -> alt.TopLevelMixin:
    chart: alt.TopLevelMixin = (
        alt.Chart(ROWS)
        .mark_bar()
        .encode(
            y=alt.Y("model:N", title=None),
            yOffset=alt.YOffset("percentile:N"),
            x=alt.X("ms:Q", title="latency (ms)"),
            color=alt.Color("percentile:N", scale=alt.Scale(domain=["p50", "p95"], range=["#72b7b2", "#b279a2"])),
            tooltip=["model:N", "percentile:N", alt.Tooltip("ms:Q", format=",.0f")],
        )
        .properties(width="container")
    )
    return chart


def latency_percentile_chart(rows: list[dict[str, Any]]) -> Chart:
    return Chart(
        "latency-percentiles",
        "Latency p50 and p95 per model",
        "The median (p50) and 95th-percentile (p95) latency of each model's answering attempt.",
        _spec(_latency_percentiles, rows=rows),
    )


def _latency_histogram() -> alt.TopLevelMixin:
    chart: alt.TopLevelMixin = (
        alt.Chart(ROWS)
        .mark_line(interpolate="step-after", point=False)
        .encode(
            x=alt.X("from_ms:Q", title="latency (ms), binned"),
            y=alt.Y("rows:Q", title="rows"),
            color=alt.Color("model:N"),
            tooltip=["model:N", "from_ms:Q", "to_ms:Q", "rows:Q"],
        )
        .properties(width="container")
    )
    return chart


def latency_histogram_chart(rows: list[dict[str, Any]]) -> Chart:
    return Chart(
        "latency-distribution",
        "Latency distribution per model",
        "How many answered rows of each model fell into each latency bin (shared bins over the run's range).",
        _spec(_latency_histogram, rows=rows),
    )


# -- history ----------------------------------------------------------------------------------
def _run_axis() -> alt.X:
    return alt.X("run:N", sort=None, title="run (UTC start)", axis=alt.Axis(labelAngle=-30))


def _markers() -> alt.Chart:
    """A dashed vertical rule at each run where something changed (see _history_marks.change_markers)."""
    rules: alt.Chart = (
        alt.Chart(MARKERS)
        .mark_rule(color="#e45756", strokeDash=[4, 3])
        .encode(x=_run_axis(), tooltip=[alt.Tooltip("run:N"), alt.Tooltip("what:N", title="change")])
    )
    return rules


def _domain(rows: list[dict[str, Any]]) -> tuple[str, ...]:
    """One colour per model on every chart of the page: the domain is fixed, 'all' last."""
    models = sorted({str(row["model"]) for row in rows} - {"all"})
    return (*models, "all") if any(row["model"] == "all" for row in rows) else tuple(models)


def _trend(domain: tuple[str, ...], value: str, percent: bool, title: str, fmt: str) -> alt.Chart:
    lines: alt.Chart = (
        alt.Chart(ROWS)
        .mark_line(point=True)
        .encode(
            x=_run_axis(),
            y=alt.Y(f"{value}:Q", title=title, axis=PERCENT if percent else alt.Axis()),
            color=alt.Color("model:N", scale=alt.Scale(domain=list(domain))),
            tooltip=["run:N", "model:N", alt.Tooltip(f"{value}:Q", format=fmt), "file:N"],
        )
    )
    return lines


def _history_pass(domain: tuple[str, ...], markers: bool) -> alt.TopLevelMixin:
    lines = _trend(domain, "rate", True, "pass rate", ".1%")
    return alt.layer(*([lines, _markers()] if markers else [lines])).properties(width="container")


def history_pass_chart(rows: list[dict[str, Any]], markers: list[dict[str, Any]]) -> Chart:
    return Chart(
        "history-pass-rate",
        "Pass rate per model over time",
        "Each model's pass rate in each run, oldest first; dashed red rules mark runs where something changed.",
        _spec(_history_pass, _domain(rows), bool(markers), rows=rows, markers=markers),
    )


def _history_cost() -> alt.TopLevelMixin:
    chart: alt.TopLevelMixin = (
        alt.Chart(ROWS)
        .mark_bar()
        .encode(
            x=_run_axis(),
            y=alt.Y("sum(usd):Q", title="USD billed, and held where unknown"),
            color=_COST_PARTS,
            tooltip=_cost_tooltip("run:N", "file:N"),
        )
        .properties(width="container")
    )
    return chart


def history_cost_chart(rows: list[dict[str, Any]]) -> Chart:
    return Chart(
        "history-cost",
        "Cost per run",
        "What each run was billed in total; where a cost is unknown, the worst case held for it, in grey.",
        _spec(_history_cost, rows=rows),
    )


def _trend_chart(domain: tuple[str, ...], value: str, percent: bool, title: str, fmt: str) -> alt.TopLevelMixin:
    return _trend(domain, value, percent, title, fmt).properties(width="container")


def history_latency_chart(rows: list[dict[str, Any]]) -> Chart:
    return Chart(
        "history-latency",
        "p95 latency per model over time",
        "The 95th-percentile latency of each model's answers in each run.",
        _spec(_trend_chart, _domain(rows), "p95_ms", False, "p95 latency (ms)", ",.0f", rows=rows),
    )


def history_error_chart(rows: list[dict[str, Any]]) -> Chart:
    return Chart(
        "history-errors",
        "Error rate per model over time",
        "The share of each model's sent requests that ended in an error row, per run ('all': the whole run).",
        _spec(_trend_chart, _domain(rows), "error_rate", True, "error rate", ".1%", rows=rows),
    )
