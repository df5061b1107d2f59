"""Turn the runs' samples into rows, a Markdown table and one PNG chart.

Every ratio is sockpool's median divided by the reference's median, in the
row's own unit: above 1 is better for a rate, below 1 for a latency.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from bench.workloads import Sizes


@dataclass(frozen=True)
class Row:
    key: str  # samples key
    short: str  # the chart's panel title
    title: str
    unit: str
    higher_is_better: bool
    reference: str = "local"
    pick: Callable[[Any], float] = float
    target: str = ""
    met: Callable[[float, float | None], bool] | None = None


def row_specs(s: Sizes) -> list[Row]:
    p50 = lambda m: m["p50_ms"]  # noqa: E731
    p99 = lambda m: m["p99_ms"]  # noqa: E731
    return [
        Row("bulk_map", f"1. Bulk map, {s.bulk_items:,} items", f"1. Bulk map: square over {s.bulk_items:,} items (Client.map / Pool.map)",
            "items/s", True, target="≥ 0.5× local", met=lambda v, r: r is not None and v >= 0.5 * r),
        Row("independent", f"2. Independent jobs, {s.independent_jobs:,} submits", f"2. Independent jobs: {s.independent_jobs:,} submits (Client.submit / Pool.apply_async)",
            "jobs/s", True, target="≥ 1.0× local", met=lambda v, r: r is not None and v >= r),
        Row("latency", "3. Round trip p50", "3. Round trip p50 (submit + result / ProcessPoolExecutor)", "ms", False,
            pick=p50, target="≤ 2.5× local", met=lambda v, r: r is not None and v <= 2.5 * r),
        Row("latency", "3. Round trip p99", "3. Round trip p99", "ms", False, pick=p99,
            target="≤ 1.5 ms (quiet machine)", met=lambda v, r: v <= 1.5),
        Row("parallel", f"4. Parallel efficiency, {s.spin_jobs} × {s.spin_s * 1000:g} ms", f"4. Parallel efficiency: {s.spin_jobs} jobs of {s.spin_s * 1000:g} ms CPU on 2 processes",
            "efficiency", True, target="≥ 0.9", met=lambda v, r: v >= 0.9),
        Row("memory", "5. Broker memory per queued job", f"5. Broker memory per queued job ({s.queued_jobs:,} queued, no worker)",
            "bytes", False, target="≤ 1024", met=lambda v, r: v <= 1024),
        Row("cli_submit", f"6. `submit` of {s.cli_args:,} args", f"6. `submit` of {s.cli_args:,} args, end to end (vs a Pool.map script)",
            "args/s", True),
        Row("durable", "7. Durable vs in-memory broker", f"7. Durable broker, {s.independent_jobs:,} submits (vs in-memory broker)",
            "jobs/s", True, reference="in_memory"),
        Row("forget_rss", f"8. Broker RSS, {s.forget_jobs:,} fire-and-forget", f"8. Broker RSS after {s.forget_jobs:,} fire-and-forget jobs ran (vs with them queued)",
            "MB", False, reference="queued", target="≤ 1.05× queued", met=lambda v, r: r is not None and v <= 1.05 * r),
        Row("async_bulk_map", f"9. AsyncClient bulk map, {s.bulk_items:,} items",
            f"9. AsyncClient bulk map: `await client.map(...)` of {s.bulk_items:,} items (vs Client.map, same run)",
            "items/s", True, reference="client", target="≥ 0.9× Client", met=lambda v, r: r is not None and v >= 0.9 * r),
        Row("async_independent", f"10. AsyncClient independent jobs, {s.independent_jobs:,}",
            f"10. AsyncClient independent jobs: {s.independent_jobs:,} submits, gathered (vs Client.submit, same run)",
            "jobs/s", True, reference="client", target="≥ 0.9× Client", met=lambda v, r: r is not None and v >= 0.9 * r),
        Row("plain_jobs", "11. Plain jobs, limits + keys held", f"11. Jobs with no key or limit, {s.control_jobs:,} submits, on a broker holding {s.control_jobs:,} keys and 2 limits (vs a plain broker)",
            "jobs/s", True, reference="plain", target="≥ 0.9× plain", met=lambda v, r: r is not None and v >= 0.9 * r),
        Row("limited", "12. Task at its limit of 2", f"12. Parallel efficiency: {s.spin_jobs} jobs of {s.spin_s * 1000:g} ms CPU under a global limit of 2, on 2 processes (vs the same jobs unlimited)",
            "efficiency", True, reference="unlimited", target="≥ 0.9× unlimited", met=lambda v, r: r is not None and v >= 0.9 * r),
        Row("keyed_submits", "13. Unique-key submits", f"13. {s.control_jobs:,} submits, each with its own unique key (vs no key)",
            "jobs/s", True, reference="plain"),
        Row("key_memory", "14. Broker memory, keyed job", f"14. Broker memory per queued job with a 16-character unique key ({s.queued_jobs:,} queued; vs no key)",
            "bytes", False, reference="plain"),
        Row("key_store", "15. Store bytes, keyed job", f"15. Store bytes per queued job with a unique key (vs no key)",
            "bytes", False, reference="plain"),
        *large_rows(s),
        Row("broker_cpu_job", "17. Broker CPU per job", f"17. Broker CPU per independent job (item 2, durable, from /proc)",
            "µs", False, reference="none", target="≤ 10", met=lambda v, r: v <= 10),
        Row("broker_cpu_item", "17. Broker CPU per map item", f"17. Broker CPU per map item (item 1, durable, from /proc)",
            "ns", False, reference="none", target="≤ 100", met=lambda v, r: v <= 100),
        *scale_rows(s),
        Row("hop", "19. Client ↔ broker hop p50", "19. One hop: ping ↔ pong client–broker p50 (for the round trip's breakdown)",
            "ms", False, reference="none", pick=p50),
        *[Row("legs", f"19. Round trip mean: {name}", f"19. Lone job round trip, mean: {name}", "ms", False,
              reference="none", pick=lambda m, k=key: m[k])
          for key, name in (("total_ms", "in all"), ("client_side_ms", "client ↔ broker (2 hops + client threads)"),
                            ("queue_ms", "queued at the broker"), ("worker_leg_ms", "broker → worker → pool → broker"))],
        Row("depth_memory", f"20. Memory per job, {s.depth_jobs:,} queued", f"20. Broker memory per queued job, {s.depth_jobs:,} queued, durable, no worker",
            "bytes", False, reference="none", target="≤ 400", met=lambda v, r: v <= 400),
        Row("restart_listen", "20. Restart: listening", f"20. Restart after kill -9 with {s.depth_jobs:,} queued: until it listens and serves workers",
            "s", False, reference="none", target="≤ 2", met=lambda v, r: v <= 2),
        Row("restart_restored", "20. Restart: all restored", f"20. … until every job is back in the queue (clients admitted)",
            "s", False, reference="none"),
        Row("restart_cpu", "20. Restart: broker CPU", f"20. … the restarted broker's CPU time until every job is back (from /proc)",
            "s", False, reference="none"),
        Row("postgres", "21. PostgreSQL store vs SQLite", f"21. Durable broker on PostgreSQL (fsync on), {s.independent_jobs:,} submits (vs SQLite)",
            "jobs/s", True, reference="sqlite", target="a large fraction of SQLite"),
        Row("failover", "22. Failover, kill -9 to first result", "22. Failover: kill -9 of the active broker to the first result from the new one",
            "s", False, reference="none", target="a few seconds", met=lambda v, r: v <= 5.0),
        Row("fair_share", f"23. Small client behind {s.fair_backlog:,}", f"23. Fair share: a client's one job behind another's {s.fair_backlog:,} jobs of {s.spin_s * 1000:g} ms: its wait",
            "ms", False, reference="none", target="≤ 50 ms", met=lambda v, r: v <= 50),
        Row("priority", f"24. High priority behind {s.priority_backlog:,}", f"24. High-priority job behind {s.priority_backlog:,} queued: time to start (submit to result)",
            "ms", False, reference="none", target="≤ 50 ms", met=lambda v, r: v <= 50),
        Row("delayed", "25. Delayed-job lateness p50", f"25. Delayed-job lateness p50 ({s.delayed_jobs:,} jobs due over 2 s, idle cluster)",
            "ms", False, reference="none", pick=p50, target="≤ 50 ms", met=lambda v, r: v <= 50),
        Row("delayed", "25. Delayed-job lateness p99", "25. Delayed-job lateness p99", "ms", False, reference="none", pick=p99),
    ]


def large_rows(s: Sizes) -> list[Row]:
    rows = []
    for mib, count in s.large:
        want = 0.6 if mib < 0.5 else 0.5
        for key, where in (("large", "in-memory"), ("large_durable", "durable")):
            rows.append(Row(
                f"{key}_{mib:g}", f"16. Args {mib:g} MiB × {count}, {where}",
                f"16. Large arguments: {mib:g} MiB × {count}, {where} broker (vs Pool.apply_async)",
                "MiB/s", True, target=f"≥ {want}× local", met=lambda v, r, want=want: r is not None and v >= want * r,
            ))
    for mib, count in s.large:
        rows.append(Row(f"large_cpu_{mib:g}", f"16. Broker CPU per MiB, {mib:g} MiB jobs",
                        f"16. Broker CPU per MiB of arguments, {mib:g} MiB jobs, in-memory (vs durable)",
                        "ms", False, reference="durable"))
    rows.append(Row("large_rss", "16. Broker peak RSS, large args", "16. Broker peak RSS after all large-argument runs, in-memory (vs durable)",
                    "MiB", False, reference="durable"))
    return rows


def scale_rows(s: Sizes) -> list[Row]:
    first = s.scale_steps[0]
    rows = []
    for step in s.scale_steps:
        rows.append(Row(f"scale_{step}", f"18. Scale {step} × {step}",
                        f"18. Scale: {step} clients × {step} one-process workers, {s.scale_jobs:,} jobs each (vs {first} × {first})",
                        "jobs/s", True, reference="first", target=f"≥ 1.0× {first} × {first}",
                        met=lambda v, r: r is not None and v >= 0.95 * r))
    for step in s.scale_steps:
        rows.append(Row(f"scale_fairness_{step}", f"18. Fairness {step} × {step}",
                        f"18. … slowest client's jobs/s ÷ fastest's, {step} × {step}",
                        "ratio", True, reference="none", target="no client starves: ≥ 0.5", met=lambda v, r: v >= 0.5))
    return rows


def median(values: list[Any], pick: Callable[[Any], float]) -> float | None:
    return statistics.median(pick(v) for v in values) if values else None


def rows(sizes: Sizes, samples: dict[str, dict[str, list[Any]]]) -> list[dict[str, Any]]:
    out = []
    for spec in row_specs(sizes):
        sides = samples.get(spec.key, {})
        value = median(sides.get("sockpool", sides.get("durable", [])), spec.pick)
        reference = median(sides.get(spec.reference, []), spec.pick)
        dask = median(sides.get("dask", []), spec.pick)
        out.append({
            "key": spec.key,
            "title": spec.title,
            "short": spec.short,
            "unit": spec.unit,
            "higher_is_better": spec.higher_is_better,
            "reference": spec.reference,
            "sockpool": value,
            "local": reference,
            "ratio": value / reference if value is not None and reference else None,
            "dask": dask,
            "dask_ratio": dask / reference if dask is not None and reference else None,
            "target": spec.target,
            "met": None if spec.met is None or value is None else spec.met(value, reference),
        })
    return out


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if unit in ("ms", "efficiency") or abs(value) < 10:
        return f"{value:.2f}"
    return f"{value:,.0f}"


def fmt_ratio(ratio: float | None) -> str:
    if ratio is None:
        return "n/a"
    return f"{ratio:.2f}×" if ratio >= 0.1 else f"{ratio:.2g}×"


def table(results: dict[str, Any]) -> str:
    lines = [
        "| workload | unit | sockpool | local | sockpool ÷ local | Dask | Dask ÷ local | target | met |",
        "|---|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in results["workloads"]:
        ratio, dask_ratio = fmt_ratio(r["ratio"]), fmt_ratio(r["dask_ratio"])
        met = {None: "", True: "yes", False: "**no**"}[r["met"]]
        lines.append(
            f"| {r['title']} | {r['unit']} | {fmt(r['sockpool'], r['unit'])} | {fmt(r['local'], r['unit'])} "
            f"| {ratio} | {fmt(r['dask'], r['unit'])} | {dask_ratio} | {r['target']} | {met} |"
        )
    m, load = results["machine"], results["load_average"]
    lines.append("")
    lines.append(
        f"Medians of {results['sizes']['runs']} runs on {m['nproc']} × {m['cpu']}, Python {m['python']}; "
        f"load average before {load['before'][0]:.2f}, highest during {load['during_max'][0]:.2f} "
        f"(1 min; the benchmark's own processes count); {results['wall_s']:.0f} s in all."
    )
    return "\n".join(lines)


def chart(results: dict[str, Any], path: Path) -> Path | None:
    """One panel per workload: sockpool, the reference and Dask side by side."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows_ = [r for r in results["workloads"] if r["sockpool"] is not None]
    cols = 4
    grid_rows = max(1, -(-len(rows_) // cols))
    fig, axes = plt.subplots(grid_rows, cols, figsize=(16, 3.75 * grid_rows), squeeze=False)
    colours = {"sockpool": "#2b6cb0", "local Pool": "#9ca3af", "in-memory": "#9ca3af", "durable": "#9ca3af",
               "first step": "#9ca3af", "none": "#9ca3af", "Dask": "#e07a1f"}
    for ax, r in zip(axes.flat, rows_):
        reference = {"in_memory": "in-memory", "durable": "durable", "first": "first step", "none": "none"}.get(r["reference"], "local Pool")
        labels = ["sockpool", reference, "Dask"]
        values = [r["sockpool"], r["local"], r["dask"]]
        shown = [(lbl, v) for lbl, v in zip(labels, values) if v is not None]
        ax.bar([lbl for lbl, _ in shown], [v for _, v in shown], color=[colours[lbl] for lbl, _ in shown])
        for i, (_, v) in enumerate(shown):
            ax.annotate(fmt(v, r["unit"]), (i, v), ha="center", va="bottom", fontsize=8)
        ax.set_title(r["short"], fontsize=10)
        better = "higher is better" if r["higher_is_better"] else "lower is better"
        ax.set_ylabel(f"{r['unit']} ({better})", fontsize=8)
        ax.tick_params(labelsize=8)
        if r["target"]:
            verdict = "met" if r["met"] else "NOT met"
            ax.set_xlabel(f"target {r['target']}: {verdict}", fontsize=8)
    for ax in list(axes.flat)[len(rows_):]:
        ax.axis("off")
    m, load = results["machine"], results["load_average"]
    fig.suptitle(
        f"sockpool vs local multiprocessing.Pool(2) — medians of {results['sizes']['runs']} runs, "
        f"{m['nproc']} × {m['cpu']}, Python {m['python']}, load before {load['before'][0]:.2f}",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _wrap(text: str, width: int) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join([*lines, line])
