"""A report as CSV, JSON or a self-contained HTML page whose plots are inline SVG (they work offline).

CSV columns (documented in docs/admin/accounting.md): the grouping (`user`, `group`, `resource`, `site` or
`model`), `resource` (not repeated when grouping by resource), `unit`, `hours` (unit-hours),
`gpu_equivalent_hours`, `energy_kwh`, `measured_energy_kwh` (the part of it DCGM measured), `co2e_kg`, `started`.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime

import jinja2

from aifacility.accounting.report import Report, Row

FIELDS = ("resource", "unit", "hours", "gpu_equivalent_hours", "energy_kwh", "measured_energy_kwh", "co2e_kg",
          "started")


def _fields(report: Report) -> list[str]:
    """The columns: the grouping, then FIELDS (without `resource` again when grouping by resource)."""
    return [report.by, *(f for f in FIELDS if not (f == "resource" and report.by == "resource"))]


def _values(report: Report, r: Row) -> list[object]:
    values = {"resource": r.resource, "unit": r.unit, "hours": round(r.hours, 6),
              "gpu_equivalent_hours": round(r.gpu_equivalent_hours, 6), "energy_kwh": round(r.energy_kwh, 6),
              "measured_energy_kwh": round(r.measured_energy_kwh, 6), "co2e_kg": round(r.co2e_kg, 6),
              "started": r.started}
    return [r.key, *(values[f] for f in _fields(report)[1:])]


def to_csv(report: Report) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(_fields(report))
    for r in report.rows:
        w.writerow(_values(report, r))
    return out.getvalue()


def to_json(report: Report) -> str:
    return json.dumps({
        "from": report.start.isoformat(), "to": report.end.isoformat(), "by": report.by,
        "rows": [dict(zip(_fields(report), _values(report, r), strict=True)) for r in report.rows],
        "totals": {k: round(report.total(k), 6) for k in ("gpu_equivalent_hours", "energy_kwh", "measured_energy_kwh",
                                                          "co2e_kg")},
        "models_without_power_figure": report.unpowered_models,
    }, indent=2) + "\n"


def _svg(figure: object) -> str:
    buf = io.StringIO()
    figure.savefig(buf, format="svg", bbox_inches="tight")  # type: ignore[attr-defined]
    text = buf.getvalue()
    return text[text.index("<svg"):]  # inline: no XML prolog inside HTML


def plots(report: Report, by_day: list[tuple[datetime, float, float]], by_group: Report) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    out: dict[str, str] = {}
    fig = Figure(figsize=(9, 3.2), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    days = [d for d, _, _ in by_day]
    ax1.bar(days, [g for _, g, _ in by_day], color="#4c72b0")
    ax1.set_title("GPU-equivalent hours per day")
    ax2.bar(days, [c for _, _, c in by_day], color="#dd8452")
    ax2.set_title("CPU core-hours per day")
    for ax in (ax1, ax2):
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    out["over_time"] = _svg(fig)
    groups = sorted({r.key for r in by_group.rows})
    fig = Figure(figsize=(8, 0.4 * max(len(groups), 3) + 1), layout="constrained")
    ax = fig.subplots()
    gpu = [sum(r.gpu_equivalent_hours for r in by_group.rows if r.key == g) for g in groups]
    kwh = [sum(r.energy_kwh for r in by_group.rows if r.key == g) for g in groups]
    ys = range(len(groups))
    ax.barh([y - 0.2 for y in ys], gpu, height=0.4, label="GPU-equivalent hours", color="#4c72b0")
    ax.barh([y + 0.2 for y in ys], kwh, height=0.4, label="energy (kWh)", color="#55a868")
    ax.set_yticks(list(ys), groups)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("By group")
    out["by_group"] = _svg(fig)
    resources = sorted({r.resource for r in report.rows})
    fig = Figure(figsize=(8, 3), layout="constrained")
    ax = fig.subplots()
    ax.bar(resources, [sum(r.energy_kwh for r in report.rows if r.resource == x) for x in resources],
           color="#55a868")
    ax.set_title("Energy by resource (kWh)")
    out["by_resource"] = _svg(fig)
    return out


_PAGE = jinja2.Environment(autoescape=True).from_string("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Usage {{ start }} to {{ end }}</title>
<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;
padding:.2em .6em;text-align:right}td:first-child,th:first-child{text-align:left}figure{margin:1em 0}</style>
</head><body>
<h1>{{ title }}, {{ start }} to {{ end }} (UTC)</h1>
<p>GPU-equivalent hours: <b>{{ "%.2f"|format(report.total("gpu_equivalent_hours")) }}</b>;
energy: <b>{{ "%.2f"|format(report.total("energy_kwh")) }} kWh</b>{% if report.total("measured_energy_kwh") %}
({{ "%.2f"|format(report.total("measured_energy_kwh")) }} kWh of it measured by DCGM){% endif %};
CO<sub>2</sub>-equivalent: <b>{{ "%.2f"|format(report.total("co2e_kg")) }} kg</b>.</p>
{% if report.unpowered_models %}<p>No power figure in the facility file for: {{ report.unpowered_models|join(", ") }}
(no energy counted for them).</p>{% endif %}
<table><thead><tr><th>{{ report.by }}</th>{% if report.by != "resource" %}<th>resource</th>{% endif %}
<th>unit</th><th>unit-hours</th>
<th>GPU-equivalent hours</th><th>energy (kWh)</th><th>CO2e (kg)</th><th>started</th></tr></thead><tbody>
{% for r in report.rows %}<tr><td>{{ r.key }}</td>{% if report.by != "resource" %}<td>{{ r.resource }}</td>{% endif %}
<td>{{ r.unit }}</td><td>{{ "%.3f"|format(r.hours) }}</td><td>{{ "%.3f"|format(r.gpu_equivalent_hours) }}</td>
<td>{{ "%.3f"|format(r.energy_kwh) }}{% if r.measured_energy_kwh %} ({{ "%.3f"|format(r.measured_energy_kwh) }}
measured){% endif %}</td><td>{{ "%.3f"|format(r.co2e_kg) }}</td><td>{{ r.started }}</td></tr>
{% endfor %}</tbody></table>
{% for title, svg in figures %}<figure><figcaption>{{ title }}</figcaption>{{ svg|safe }}</figure>{% endfor %}
</body></html>
""")


def to_html(report: Report, figures: dict[str, str], title: str | None = None) -> str:
    titles = {"over_time": "Usage over time", "by_group": "By group", "by_resource": "By resource"}
    return _PAGE.render(report=report, start=report.start.isoformat(), end=report.end.isoformat(),
                        title=title or f"Usage by {report.by}",
                        figures=[(titles[k], v) for k, v in figures.items()])
