"""Sweep results: rows, Pareto fronts, CSV/JSON, plots and the printed summary.

Rows are sorted by workload (spec order), board (spec order), then the point's position in
the cartesian product. Nothing written depends on wall time, paths or the order in which
workers finished, so two runs of a spec (interrupted or not, local or on a cluster) write
the same CSV and JSON byte for byte.

Pareto fronts are computed per workload and board (latencies of different workloads do
not compare) over the ``ok`` points: latency (minimise) against LUTs (minimise), and
latency against accuracy (maximise) where a workload has an accuracy.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence

from lowbit import __version__
from lowbit.report import atomic_write, dumps_json, format_table

__all__ = ["FRONTS", "ROW_FIELDS", "build_rows", "pareto_front", "summary_text",
           "write_outputs"]

#: ``name: (x field, y field, maximise y)`` of each Pareto front; latency is always
#: minimised.
FRONTS = {
    "lut": ("lut", "latency_us", False),
    "accuracy": ("latency_us", "accuracy", True),
}

#: CSV columns after the varied parameters.
ROW_FIELDS = ("config", "cycles", "latency_us", "clock_mhz", "clock_source", "pe_utilization",
              "useful_utilization", "accuracy", "float_accuracy", "verified", "lut", "ff",
              "dsp", "bram", "bram_bits", "fmax_mhz", "resources", "pareto_lut",
              "pareto_accuracy", "key", "error")

SUMMARY_ROWS = 8            # front members printed per workload


def pareto_front(values: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the non-dominated points of ``values`` (every objective minimised), in
    input order. A point is dominated when another is no worse in every objective and
    better in at least one; equal points do not dominate each other."""
    if not values:
        return []
    dims = len(values[0])
    if dims == 2:
        order = sorted(range(len(values)), key=lambda i: (values[i][0], values[i][1]))
        front, best, last = [], math.inf, None
        for i in order:
            x, y = values[i]
            if y < best:
                front.append(i)
                best, last = y, (x, y)
            elif (x, y) == last:
                front.append(i)
        return sorted(front)
    front = []
    for i, a in enumerate(values):
        if not any(all(b[d] <= a[d] for d in range(dims)) and tuple(b) != tuple(a)
                   for b in values):
            front.append(i)
    return front


def _round(value, digits: int = 6):
    if isinstance(value, float):
        return round(value, digits) if math.isfinite(value) else None
    return value


def build_rows(spec, points, results: dict, resources: dict, resource_errors: dict,
               crashes: dict) -> list[dict]:
    """One row per point: ``results[key]`` (stored point results), ``resources[design]``
    and ``resource_errors[design]`` by design key, ``crashes[key]`` this run's crashes."""
    from lowbit.config import AccelConfig

    wl_pos = {wl.name: i for i, wl in enumerate(spec.workloads)}
    board_pos = {b: i for i, b in enumerate(spec.boards)}
    keyed = []
    for p in points:
        row = {"workload": p.workload.name, "kind": p.workload.kind, "board": p.board or "",
               "params": dict(p.params), "key": p.key}
        row.update({f: None for f in ROW_FIELDS if f not in row})
        row["pareto_lut"] = row["pareto_accuracy"] = False
        row["config_fields"] = dict(p.config)
        if not p.valid:
            row.update(status="invalid", error=p.error)
        else:
            cfg = AccelConfig.from_dict(p.config)
            row["config"] = cfg.name
            design = p.design
            res = resources.get(design)
            if p.key in crashes:
                result = crashes[p.key]
            else:
                result = results.get(p.key, {"status": "missing", "error": "not computed",
                                             "metrics": {}})
            metrics = result.get("metrics", {})
            status, error = result["status"], result.get("error")
            if status == "ok" and res is None:
                status = "error"
                error = resource_errors.get(design, "resources were not computed")
            for name in ("cycles", "pe_utilization", "useful_utilization", "accuracy",
                         "float_accuracy", "verified"):
                row[name] = metrics.get(name)
            row["counters"] = metrics.get("counters", {})
            row["instructions"] = metrics.get("instructions")
            row["batch"] = metrics.get("batch")
            if res is not None:
                for name in ("lut", "ff", "dsp", "bram", "bram_bits", "fmax_mhz"):
                    row[name] = res.get(name)
                row["resources"] = res.get("source")
            fmax = row["fmax_mhz"]
            row["clock_mhz"] = float(fmax) if fmax else cfg.clock_mhz
            row["clock_source"] = "fmax" if fmax else "target"
            if row["cycles"] is not None:
                row["latency_us"] = row["cycles"] / row["clock_mhz"]
            row.update(status=status, error=error)
        keyed.append(((wl_pos[p.workload.name], board_pos[p.board], p.index), row))
    keyed.sort(key=lambda item: item[0])
    rows = [row for _, row in keyed]
    _mark_fronts(rows)
    return rows


def _groups(rows):
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["workload"], row["board"]), []).append(row)
    return groups


def _mark_fronts(rows) -> None:
    for group in _groups(rows).values():
        for name, (xf, yf, maximise) in FRONTS.items():
            cands = [r for r in group if r["status"] == "ok" and r[xf] is not None
                     and r[yf] is not None]
            values = [(r[xf], -r[yf] if maximise else r[yf]) for r in cands]
            for i in pareto_front(values):
                cands[i][f"pareto_{name}"] = True


# -- files ----------------------------------------------------------------------------------

def _csv_text(spec, rows) -> str:
    params = list(spec.varied)
    header = ["workload", "kind", "board", "status"] + params + list(ROW_FIELDS)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for r in rows:
        line = [r["workload"], r["kind"], r["board"], r["status"]]
        line += [_round(r["params"].get(p)) for p in params]
        line += [_round(r[f]) for f in ROW_FIELDS]
        writer.writerow(["" if v is None else v for v in line])
    return buf.getvalue()


def _spec_summary(spec) -> dict:
    return {
        "base": spec.base.to_dict(),
        "vary": {a.label: [list(v) if len(v) > 1 else v[0] for v in a.values]
                 for a in spec.axes},
        "workloads": [{"name": wl.name, **wl.identity()} for wl in spec.workloads],
        "boards": [b for b in spec.boards if b is not None],
        "resources": spec.resources, "mem_latency": spec.mem_latency,
    }


def _json_doc(spec, rows) -> dict:
    fronts = {}
    for (wl, board), group in _groups(rows).items():
        name = f"{wl}@{board}" if board else wl
        fronts[name] = {f: [r["key"] for r in group if r[f"pareto_{f}"]] for f in FRONTS}
    counts = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return {"lowbit_version": __version__, "spec": _spec_summary(spec), "counts": counts,
            "pareto": fronts, "points": rows}


def _plot(path, rows, front: str) -> bool:
    xf, yf, _ = FRONTS[front]
    groups = [(k, g) for k, g in _groups(rows).items()
              if any(r["status"] == "ok" and r[xf] is not None and r[yf] is not None
                     for r in g)]
    if not groups:
        return False
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogFormatter

    n = len(groups)
    cols = min(n, 3)
    nrows = -(-n // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.5 * cols, 3.6 * nrows), squeeze=False)
    labels = {"lut": "LUTs", "latency_us": "latency (us)", "accuracy": "accuracy"}
    for ax, ((wl, board), group) in zip(axes.flat, groups, strict=False):
        ok = [r for r in group if r["status"] == "ok" and r[xf] is not None
              and r[yf] is not None]
        on = sorted((r for r in ok if r[f"pareto_{front}"]), key=lambda r: (r[xf], r[yf]))
        ax.scatter([r[xf] for r in ok], [r[yf] for r in ok], s=14, color="0.7",
                   label="points")
        ax.plot([r[xf] for r in on], [r[yf] for r in on], "o-", color="C3", ms=5,
                drawstyle="steps-post", label="Pareto front")
        ax.set_xlabel(labels[xf])
        ax.set_ylabel(labels[yf])
        ax.set_title(f"{wl}" + (f" on {board}" if board else ""), fontsize=10)
        if front == "lut":          # sizes and latencies span decades
            ax.set_xscale("log")
            ax.set_yscale("log")
            for axis in (ax.xaxis, ax.yaxis):
                axis.set_major_formatter(LogFormatter(labelOnlyBase=False))
                axis.set_minor_formatter(LogFormatter(labelOnlyBase=False,
                                                      minor_thresholds=(1.5, 0.5)))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.suptitle("latency vs LUTs" if front == "lut" else "latency vs accuracy")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, metadata={"Software": None})
    plt.close(fig)
    atomic_write(path, buf.getvalue())
    return True


def _fmt_params(params: list[dict]) -> str:
    """``k=v`` per parameter; ``k=v1|v2`` where the grouped points differ."""
    out = []
    for k in params[0]:
        values = list(dict.fromkeys(_round(p[k]) for p in params))
        out.append(f"{k}={'|'.join(map(str, values))}")
    return " ".join(out)


def summary_text(spec, rows, *, stats: dict | None = None) -> str:
    """The one-screen summary: counts, then each workload's Pareto points by latency."""
    counts = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    parts = [f"{counts.get(s, 0)} {s}" for s in ("ok", "invalid", "error", "crash", "missing")
             if counts.get(s)]
    lines = [f"sweep: {len(rows)} points ({', '.join(parts)})"
             + (f"; computed {stats['computed']}, cached {stats['cached']}" if stats else "")]
    clock = "achieved Fmax" if any(r["clock_source"] == "fmax" for r in rows) \
        else "the target clock"
    lines.append(f"Pareto fronts per workload (L: latency vs LUTs, A: latency vs accuracy); "
                 f"latency at {clock}")
    described = {w.name: w.describe() for w in spec.workloads}
    for (wl, board), group in _groups(rows).items():
        members = [r for r in group if r["pareto_lut"] or r["pareto_accuracy"]]
        title = f"{wl} ({described[wl]})" + (f" on {board}" if board else "")
        if not members:
            lines.append("")
            lines.append(f"{title}: no ok points")
            continue
        has_acc = any(r["accuracy"] is not None for r in members)
        headers = ["front", "latency us", "cycles", "PE util", "LUTs", "BRAM"] \
            + (["accuracy"] if has_acc else []) + ["params"]
        table = []
        for same in _equal_runs(members):
            r = same[0]
            mark = ("L" if r["pareto_lut"] else "") + ("A" if r["pareto_accuracy"] else "")
            table.append([mark, f"{r['latency_us']:.2f}", str(r["cycles"]),
                          f"{100 * r['pe_utilization']:.1f}%",
                          "-" if r["lut"] is None else str(r["lut"]),
                          "-" if r["bram"] is None else str(r["bram"])]
                         + ([("-" if r["accuracy"] is None else f"{r['accuracy']:.4f}")]
                            if has_acc else [])
                         + [_fmt_params([m["params"] for m in same]) or r["config"]])
        lines.append("")
        lines.append(f"{title}: {len(members)} of {sum(r['status'] == 'ok' for r in group)} "
                     f"ok points on a front")
        lines.append(format_table(headers, table[:SUMMARY_ROWS],
                                  align="<>>>>>" + (">" if has_acc else "") + "<"))
        if len(table) > SUMMARY_ROWS:
            lines.append(f"  ... {len(table) - SUMMARY_ROWS} more rows in points.csv")
    return "\n".join(lines) + "\n"


def _objectives(r) -> tuple:
    return (r["pareto_lut"], r["pareto_accuracy"], r["latency_us"], r["cycles"], r["lut"],
            r["bram"], r["accuracy"])


def _equal_runs(members: list[dict]) -> list[list[dict]]:
    """Front members by latency, points with equal numbers (e.g. differing only in a
    parameter the hardware ignores) grouped together."""
    def key(r):
        return (r["latency_us"], r["lut"] if r["lut"] is not None else 0,
                -(r["accuracy"] or 0.0), r["cycles"])
    runs: list[list[dict]] = []
    for r in sorted(members, key=key):
        if runs and _objectives(runs[-1][0]) == _objectives(r):
            runs[-1].append(r)
        else:
            runs.append([r])
    return runs


def write_outputs(out_dir, spec, rows) -> list[str]:
    """Write points.csv, points.json, summary.txt and the Pareto plots; returns the names."""
    from pathlib import Path

    out_dir = Path(out_dir)
    files = []
    atomic_write(out_dir / "points.csv", _csv_text(spec, rows))
    files.append("points.csv")
    atomic_write(out_dir / "points.json", dumps_json(_json_doc(spec, rows)))
    files.append("points.json")
    atomic_write(out_dir / "summary.txt", summary_text(spec, rows))
    files.append("summary.txt")
    for front, name in (("lut", "pareto_latency_luts.png"),
                        ("accuracy", "pareto_latency_accuracy.png")):
        if _plot(out_dir / name, rows, front):
            files.append(name)
    return files
