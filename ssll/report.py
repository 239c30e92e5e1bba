"""The cohort report: one self-contained HTML file (``ssll report``).

It reads what a workflow run left in ``results/``, ``logs/`` and ``benchmarks/`` (so it can also
be written after a run in which some subjects failed) and shows:

* the cohort's numbers: subjects done, flagged and failed; measures (mean +- sd) from the
  SSLLN segmentation and from the refined HR models; their distributions (histograms); the mean LV wall
  thickness per AHA segment at ED and its systolic thickening as bull's eyes;
* evaluation, where the subject sheet gives ground truth: Dice / HD / HD95 per structure and
  method (mean +- sd), paired Wilcoxon tests between methods, Bland-Altman and correlation
  plots of the clinical measures against the ground truth (Duan et al. 2019, Tables IV-V);
* the flagged subjects with their reasons and QC montages, and the segmentations of lowest expected
  Dice (the network's own quality estimate, :mod:`ssll.nn.confidence`) to review first;
* where subjects were given as cines and run with ``cycle: true`` (``ssll cycle``): the whole cycle's
  measures (ED and ES by the LV cavity) beside the two segmented frames', the cohort's LV volume curves
  on one time axis, and the curves of the subjects whose ED or ES lies off their curve first;
* the failed subjects with the error line of the stage that failed;
* per-stage runtimes and peak memory from Snakemake's benchmark files.

Images are embedded as base64 PNG, so the file can be mailed or archived alone.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ssll.measures import CYCLE_COLUMNS, read_measure_rows
from ssll.qc import MIN_EXPECTED_DICE
from ssll.subjects import missing_input, read_subject_sheet, result_paths
from ssll.types import PathLike

__all__ = ["aha_bullseyes", "collect", "cycle_vs_frames", "measure_agreement", "render_html", "run_report"]

MEASURES = {"ed_lv_cavity_ml": "LVEDV (ml)", "es_lv_cavity_ml": "LVESV (ml)", "lv_ef_pct": "LVEF (%)",
            "ed_lv_mass_g": "LV mass (g)", "ed_rv_cavity_ml": "RVEDV (ml)", "es_rv_cavity_ml": "RVESV (ml)",
            "rv_ef_pct": "RVEF (%)", "ed_rv_mass_g": "RV mass (g)", "ed_wall_thickness_mean_mm": "LV wall, ED (mm)",
            "es_wall_thickness_mean_mm": "LV wall, ES (mm)"}
#: the stage ``failed.tsv`` gives a subject of the sheet that no run has started (no logs): a later chunk's
NOT_RUN = "not run"
_ERROR = re.compile(r"^ssll [\w-]+: .*(error|invalid setting): .*$")


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _img_file(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _photo_file(path: Path, quality: int = 85) -> str:
    """A QC montage (a PNG of MR images) embedded as JPEG: a quarter of the PNG's bytes (patient020's
    montage: 319 -> 81 kB at quality 85), so the 40 montages a large cohort's report carries take about
    9 MB instead of 34."""
    from matplotlib import image as mpimg

    rgb = mpimg.imread(path)[..., :3]
    buf = io.BytesIO()
    mpimg.imsave(buf, rgb, format="jpeg", pil_kwargs={"quality": quality, "optimize": True})
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _failure_reason(subject: str, logs: Path) -> tuple[str, str]:
    """Why a subject has no measures: the stage and the error line of its first failing log; ``stopped``
    where it has logs without an error line; :data:`NOT_RUN` where it has no logs at all."""
    # logs/<stage>/<subject>.log: the exact name (a prefix glob would also take subject s10's logs for s1)
    found = sorted(logs.glob(f"*/{subject}.log"))
    for log in found:
        lines = log.read_text(errors="replace").splitlines()
        hits = [ln for ln in lines if _ERROR.match(ln.strip())]
        tb = [ln for ln in lines if ln.startswith(("Traceback", "MemoryError", "Killed"))]
        if hits or tb:
            return log.parent.name, (hits[-1] if hits else lines[-1]).strip()
    if found:
        return "stopped", ("no measures and no error line: stopped (killed, timed out) before the measures stage, "
                           "or still running")
    return NOT_RUN, "no logs: not run yet (a later chunk?)"


class _Rows:
    """Table rows (dicts) gathered into DataFrames every ``chunk`` rows; :meth:`frame` gives the whole table."""

    def __init__(self, chunk: int = 5000) -> None:
        self.rows: list[dict[str, Any]] = []
        self.frames: list[pd.DataFrame] = []
        self.chunk = chunk

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.chunk:
            self._flush()

    def _flush(self) -> None:
        if self.rows:
            self.frames.append(pd.DataFrame(self.rows))
            self.rows = []

    def frame(self) -> pd.DataFrame:
        self._flush()
        if not self.frames:
            return pd.DataFrame()
        return self.frames[0] if len(self.frames) == 1 else pd.concat(self.frames, ignore_index=True)


def collect(*, sheet: PathLike, results: PathLike, logs: PathLike, benchmarks: PathLike) -> dict[str, Any]:
    """Gather a run's outputs into tables (see module docstring)."""
    sheet_rows = read_subject_sheet(sheet)
    res, logs_p, bench_p = Path(results), Path(logs), Path(benchmarks)
    rows: list[Path] = []  # the subjects' measures files, read at once
    # tables gathered a few thousand rows at a time (100,000 subjects' rows as dicts would hold gigabytes)
    failed, flags, scores, cycles = _Rows(), _Rows(), _Rows(), _Rows()
    overlap, truth, bench = _Rows(), _Rows(), _Rows()
    curves: dict[str, Any] = {}  # subject -> LV cavity (ml) per frame, from ssll cycle's volumes.tsv
    dice_lines: set[float] = set()  # the expected-Dice lines the subjects were flagged below (qc: min_expected_dice)
    for row in sheet_rows:
        s = row["subject"]
        paths = result_paths(res, s)
        m = paths["measures"]
        if m.is_file():
            rows.append(m)
        elif missing := missing_input(row):
            failed.append({"subject": s, "stage": "input", "reason": f"input missing: {missing}"})
        else:
            stage, reason = _failure_reason(s, logs_p)
            failed.append({"subject": s, "stage": stage, "reason": reason})
        f = paths["flags"]
        if f.is_file():
            qc = json.loads(f.read_text())
            for fl in qc["flags"]:
                flags.append({"subject": s, **fl})
            for ph, per in (qc.get("expected_dice") or {}).items():
                scores.append({"subject": s, "phase": ph, **per})
            if "min_expected_dice" in qc:
                dice_lines.add(float(qc["min_expected_dice"]))
        e = paths["evaluate"]
        if e.is_file():
            ev = json.loads(e.read_text())
            for r in ev["overlap"]:
                overlap.append({"subject": ev["subject"], **r})
            if "measures_truth" in ev:
                truth.append({"subject": ev["subject"], **ev["measures_truth"]})
        c = paths["cycle"]
        if c.is_file():
            rec = json.loads(c.read_text())
            cycles.append({"subject": s, **{f"cycle_{col}": rec.get(key) for col, key in CYCLE_COLUMNS.items()}})
            if (v := c.with_name("volumes.tsv")).is_file():
                curves[s] = pd.read_csv(v, sep="\t")["lv_cavity_ml"].to_numpy(float)
    for tsv in sorted(bench_p.glob("**/*.tsv")):
        # Snakemake benchmark file: a header and one row per run (plain parsing: a large cohort has
        # hundreds of thousands of them)
        lines = tsv.read_text(errors="replace").splitlines()
        if len(lines) < 2:
            continue
        cells = dict(zip(lines[0].split("\t"), lines[1].split("\t")))
        try:
            seconds = float(cells["s"])
        except (KeyError, ValueError):
            continue
        try:
            rss = float(cells.get("max_rss", "nan"))
        except ValueError:  # "NA" or "-" for a job too short to sample
            rss = float("nan")
        rule = tsv.parent.name if tsv.parent != bench_p else tsv.stem
        bench.append({"stage": rule, "seconds": seconds, "max_rss_mb": rss})
    measures = read_measure_rows(rows) if rows else pd.DataFrame()
    return {"subjects": [r["subject"] for r in sheet_rows], "measures": measures, "failed": failed.frame(),
            "flags": flags.frame(), "overlap": overlap.frame(), "measures_truth": truth.frame(),
            "benchmarks": bench.frame(), "expected_dice": scores.frame(), "results": res, "cycles": cycles.frame(),
            "curves": curves,
            "min_expected_dice": sorted(dice_lines) or [MIN_EXPECTED_DICE]}


def measure_agreement(auto: pd.Series, truth: pd.Series) -> dict[str, float]:
    """Mean difference, sd of the differences, 95% limits of agreement and Pearson r (auto - truth)."""
    ok = auto.notna() & truth.notna()
    d = (auto[ok] - truth[ok]).astype(float)
    r = float(np.corrcoef(auto[ok], truth[ok])[0, 1]) if ok.sum() > 2 else float("nan")
    sd = float(d.std(ddof=1)) if len(d) > 1 else float("nan")
    return {"n": int(ok.sum()), "mean_diff": float(d.mean()) if len(d) else float("nan"), "sd_diff": sd,
            "loa_low": float(d.mean() - 1.96 * sd), "loa_high": float(d.mean() + 1.96 * sd), "pearson_r": r}


def _table(df: pd.DataFrame) -> str:
    if df.empty:
        return "<p><i>none</i></p>"
    return df.to_html(index=False, escape=True, border=0, classes="t", float_format=lambda v: f"{v:.3g}")


def _mean_sd(df: pd.DataFrame, cols: dict[str, str]) -> pd.DataFrame:
    out = []
    for c, label in cols.items():
        if c in df and df[c].notna().any():
            out.append({"measure": label, "n": int(df[c].notna().sum()), "mean": df[c].mean(), "sd": df[c].std()})
    return pd.DataFrame(out)


def _histograms(m: pd.DataFrame) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [c for c in ("ed_lv_cavity_ml", "lv_ef_pct", "ed_lv_mass_g", "ed_rv_cavity_ml") if c in m]
    if not cols or m.empty:
        return ""
    fig, axes = plt.subplots(1, len(cols), figsize=(3.2 * len(cols), 2.6), squeeze=False)
    for ax, c in zip(axes[0], cols):
        ax.hist(m[c].dropna(), bins=min(20, max(3, len(m))), color="#4a7", alpha=0.7, label="SSLLN")
        if f"refined_{c}" in m:
            ax.hist(m[f"refined_{c}"].dropna(), bins=min(20, max(3, len(m))), color="#a47", alpha=0.5, label="refined")
        ax.set_title(MEASURES[c], fontsize=9)
        ax.legend(fontsize=7)
    return f'<img alt="distributions" src="{_png(fig)}">'


#: where each AHA segment sits on the bull's eye: ring (0 basal, outermost; 2 apical) and its angular span (degrees,
#: counter-clockwise from 3 o'clock): anterior at the top, the septum on the left
_BULLSEYE = {**{n: (0, 60.0 + 60.0 * (n - 1)) for n in range(1, 7)}, **{n: (1, 60.0 + 60.0 * (n - 7)) for n in range(7, 13)},
             **{n: (2, 45.0 + 90.0 * (n - 13)) for n in range(13, 17)}}


def _bullseyes(m: pd.DataFrame) -> str:
    fig = aha_bullseyes(m)
    return "" if fig is None else f'<img alt="AHA bullseye" src="{_png(fig)}">'


def aha_bullseyes(m: pd.DataFrame) -> Any:
    """The cohort's mean LV wall thickness per AHA segment at ED and its mean systolic thickening, as bull's eyes.

    Args:
        m: one row per subject with ``ssll measures``' ``ed_wall_thickness_aha01_mm`` ... and
            ``wall_thickening_aha01_pct`` ... columns (``ssll measures`` with landmarks).

    Returns:
        A matplotlib figure, or None when no subject has those columns.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Wedge

    panels = [("ed_wall_thickness_aha{:02d}_mm", "LV wall thickness at ED (mm)", "viridis"),
              ("wall_thickening_aha{:02d}_pct", "systolic thickening (%)", "magma")]
    panels = [p for p in panels if p[0].format(1) in m and m[p[0].format(1)].notna().any()]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), squeeze=False)
    for ax, (col, title, cmap) in zip(axes[0], panels):
        vals = {n: float(pd.to_numeric(m[col.format(n)], errors="coerce").mean()) for n in _BULLSEYE}
        finite = [v for v in vals.values() if np.isfinite(v)]
        norm = matplotlib.colors.Normalize(min(finite), max(finite) if max(finite) > min(finite) else min(finite) + 1)
        for n, (ring, start) in _BULLSEYE.items():
            outer, span = 3.0 - ring, 90.0 if ring == 2 else 60.0
            colour = plt.get_cmap(cmap)(norm(vals[n])) if np.isfinite(vals[n]) else "lightgrey"
            ax.add_patch(Wedge((0, 0), outer, start, start + span, width=1.0, facecolor=colour, edgecolor="white"))
            mid, r = np.radians(start + span / 2), outer - 0.5
            dark = np.isfinite(vals[n]) and float(np.dot(matplotlib.colors.to_rgb(colour), (0.30, 0.59, 0.11))) < 0.5
            ax.text(r * np.cos(mid), r * np.sin(mid), f"{n}\n{vals[n]:.1f}", ha="center", va="center", fontsize=7,
                    color="white" if dark else "black")
        ax.set_xlim(-3.1, 3.1)
        ax.set_ylim(-3.1, 3.1)
        ax.set_aspect("equal")
        ax.axis("off")
        n_subj = int(m[col.format(1)].notna().sum())
        ax.set_title(f"{title}, mean of {n_subj}", fontsize=9)
        fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, fraction=0.04)
    fig.suptitle("AHA segments: basal (outer), mid, apical (inner); anterior at the top, septum on the left", fontsize=8)
    fig.tight_layout()
    return fig


def _agreement_plots(auto: pd.DataFrame, truth: pd.DataFrame, cols: list[str]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(cols), figsize=(3.0 * len(cols), 5.6), squeeze=False)
    for n, c in enumerate(cols):
        a, t = auto[c].astype(float), truth[c].astype(float)
        ok = a.notna() & t.notna()
        a, t = a[ok], t[ok]
        ax = axes[0, n]
        ax.scatter(t, a, s=12)
        lim = [min(a.min(), t.min()), max(a.max(), t.max())] if len(a) else [0, 1]
        ax.plot(lim, lim, "k--", lw=0.8)
        ax.set_title(f"{MEASURES[c]}: r={measure_agreement(a, t)['pearson_r']:.2f}", fontsize=8)
        ax.set_xlabel("manual", fontsize=7)
        ax.set_ylabel("automatic", fontsize=7)
        ax = axes[1, n]
        mean, diff = (a + t) / 2, a - t
        ax.scatter(mean, diff, s=12)
        agr = measure_agreement(a, t)
        for y, style in ((agr["mean_diff"], "-"), (agr["loa_low"], "--"), (agr["loa_high"], "--")):
            ax.axhline(y, color="k", ls=style, lw=0.8)
        ax.set_title(f"Bland-Altman {agr['mean_diff']:.1f} +- {agr['sd_diff']:.1f}", fontsize=8)
        ax.set_xlabel("mean", fontsize=7)
        ax.set_ylabel("auto - manual", fontsize=7)
    fig.tight_layout()
    return f'<img alt="agreement" src="{_png(fig)}">'


def _evaluation_section(data: dict[str, Any]) -> str:
    from scipy import stats

    ov = data["overlap"]
    if ov.empty:
        return "<p><i>No ground truth in the subject sheet.</i></p>"
    metric_cols = [c for c in ov.columns if c.startswith(("dice_", "hd_", "hd95_"))]
    summary = ov.groupby(["method", "phase"])[metric_cols].agg(["mean", "std"])
    summary.columns = [f"{a} {b}" for a, b in summary.columns]
    parts = ["<h3>Overlap and distance (mean, sd)</h3>", summary.reset_index().to_html(index=False, border=0,
             classes="t", float_format=lambda v: f"{v:.3g}")]
    methods = sorted(ov["method"].unique())
    if len(methods) == 2:
        tests = []
        a, b = (ov[ov.method == m].set_index(["subject", "phase"]) for m in methods)
        for c in metric_cols:
            x, y = a[c].align(b[c], join="inner")
            ok = x.notna() & y.notna()
            if ok.sum() >= 2 and not np.allclose(x[ok], y[ok]):
                tests.append({"metric": c, "n": int(ok.sum()), f"mean {methods[0]}": x[ok].mean(),
                              f"mean {methods[1]}": y[ok].mean(), "wilcoxon p": stats.wilcoxon(x[ok], y[ok]).pvalue})
        parts += [f"<h3>Paired Wilcoxon tests, {methods[0]} vs {methods[1]}</h3>", _table(pd.DataFrame(tests))]
    truth = data["measures_truth"]
    m = data["measures"]
    if not truth.empty and not m.empty:
        merged = m.merge(truth, on="subject", suffixes=("", "_truth"))
        cols = [c for c in ("ed_lv_cavity_ml", "es_lv_cavity_ml", "lv_ef_pct", "ed_lv_mass_g", "ed_rv_cavity_ml",
                            "ed_wall_thickness_mean_mm")
                if c in merged and f"{c}_truth" in merged]
        agr = []
        for src in ("", "refined_"):
            for c in cols:
                if f"{src}{c}" in merged:
                    agr.append({"method": "refined" if src else "SSLLN", "measure": MEASURES[c],
                                **measure_agreement(merged[f"{src}{c}"], merged[f"{c}_truth"])})
        auto = merged[cols]
        gt = merged[[f"{c}_truth" for c in cols]].set_axis(cols, axis=1)
        parts += ["<h3>Clinical measures against the ground truth (automatic - manual)</h3>", _table(pd.DataFrame(agr)),
                  "<h3>Correlation (top) and Bland-Altman (bottom) plots, SSLLN segmentation</h3>",
                  _agreement_plots(auto, gt, cols)]
    return "\n".join(parts)


#: the cycle's measures shown beside the two segmented frames': (cycle column, measures column)
_CYCLE_VS_FRAMES = (("cycle_lv_edv_ml", "ed_lv_cavity_ml"), ("cycle_lv_esv_ml", "es_lv_cavity_ml"),
                    ("cycle_lv_ef_pct", "lv_ef_pct"), ("cycle_rv_edv_ml", "ed_rv_cavity_ml"),
                    ("cycle_rv_esv_ml", "es_rv_cavity_ml"), ("cycle_rv_ef_pct", "rv_ef_pct"))


def cycle_vs_frames(cycles: pd.DataFrame, measures: pd.DataFrame) -> pd.DataFrame:
    """Per measure: the whole cycle's (ED / ES by the LV cavity, ``ssll cycle``) mean and sd over the subjects
    with a cycle, and the difference from the two segmented frames' measure (cycle - frames, mean and sd over the
    subjects with both). A difference shows how far the ED / ES the run measured lie from the curve's."""
    both = cycles.merge(measures, on="subject", how="left") if not measures.empty else cycles
    out = []
    for cyc, two in _CYCLE_VS_FRAMES:
        if cyc not in both or not (a := pd.to_numeric(both[cyc], errors="coerce")).notna().any():
            continue
        b = pd.to_numeric(both[two], errors="coerce") if two in both else pd.Series(np.nan, index=a.index)
        d = (a - b).dropna()
        out.append({"measure": MEASURES[two], "n": int(a.notna().sum()), "cycle mean": a.mean(), "cycle sd": a.std(),
                    "n both": len(d), "cycle - frames mean": d.mean() if len(d) else np.nan,
                    "cycle - frames sd": d.std() if len(d) > 1 else np.nan})
    return pd.DataFrame(out)


def _cohort_curves(curves: dict[str, Any], *, max_lines: int = 300) -> str:
    """One plot of the cohort's LV cavity curves, each over its own cycle (frame / frames) and relative to its
    largest volume; the median over subjects in black when there are three or more."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [s for s, v in curves.items() if len(v) >= 2 and np.nanmax(v) > 0]
    if not names:
        return ""
    shown = [names[i] for i in np.unique(np.linspace(0, len(names) - 1, min(max_lines, len(names))).round().astype(int))]
    grid = np.linspace(0.0, 1.0, 51)
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    on_grid = []
    for s in names:
        v = np.asarray(curves[s], float)
        t = np.arange(len(v) + 1) / len(v)  # the cycle closes: frame n is frame 0 again
        rel = np.append(v, v[0]) / np.nanmax(v)
        on_grid.append(np.interp(grid, t, rel))
        if s in shown:
            ax.plot(t, rel, color="tab:red", lw=0.8, alpha=max(0.08, min(0.8, 8 / len(shown))))
    if len(names) >= 3:
        ax.plot(grid, np.nanmedian(on_grid, axis=0), color="k", lw=2, label=f"median of {len(names)}")
        ax.legend(fontsize=8)
    ax.set_xlabel("fraction of the cycle (frame / frames)")
    ax.set_ylabel("LV cavity / its largest")
    ax.set_title(f"LV cavity volume curves ({len(shown)} of {len(names)} drawn)", fontsize=9)
    fig.tight_layout()
    return f'<img alt="cohort volume curves" src="{_png(fig)}">'


def _cycle_section(data: dict[str, Any], *, max_curves: int) -> str:
    cyc = data.get("cycles", pd.DataFrame())
    if cyc.empty:
        return ""
    flags = data["flags"]
    off = list(dict.fromkeys(flags.loc[flags["flag"] == "phase_off_curve", "subject"])) if not flags.empty else []
    order = off + [s for s in cyc["subject"] if s not in off]
    parts = ["<h2>Cardiac cycle</h2>",
             (f"<p><b>{len(cyc)}</b> subject(s) with every frame segmented (<code>ssll cycle</code>): ED and ES are the "
              "frames of largest and smallest LV cavity. Beside them, the difference from the two frames the run "
              f"segmented; <b>{len(off)}</b> subject(s) flagged <code>phase_off_curve</code>. Per subject: the "
              "<code>cycle_*</code> columns of <code>cohort/measures.csv</code>.</p>"),
             _table(cycle_vs_frames(cyc, data["measures"])), _cohort_curves(data.get("curves", {}))]
    shown = 0
    for s in order:
        png = result_paths(data["results"], s)["cycle"].with_name("curve.png")
        if shown < max_curves and png.is_file():
            tag = ", ED or ES off the curve" if s in off else ""
            parts.append(f'<figure><img alt="cycle {html.escape(s)}" src="{_img_file(png)}">'
                         f"<figcaption>{html.escape(s)}{tag}</figcaption></figure>")
            shown += 1
    if len(order) > shown:
        parts.append(f"<p>{len(order) - shown} more curve(s) in <code>{html.escape(str(data['results']))}"
                     "/cycle/&lt;subject&gt;/curve.png</code></p>")
    return "".join(parts)


def _flags_section(flags: pd.DataFrame, *, max_rows: int) -> str:
    """How many subjects carry each flag (per phase), then the flags of at most ``max_rows`` subjects,
    those with most flags first (every subject's are in the cohort table's ``qc_flags``)."""
    if flags.empty:
        return _table(flags)
    counts = (flags.groupby(["flag", "phase"])["subject"].nunique().unstack("phase", fill_value=0)
              .rename(columns=lambda ph: f"subjects at {ph}").rename_axis(columns=None).reset_index())
    ranked = flags["subject"].value_counts(sort=True).index
    shown = ranked[:max_rows]
    rows = flags[flags["subject"].isin(set(shown))]
    rows = rows.assign(_rank=rows["subject"].map({s: n for n, s in enumerate(shown)})).sort_values(
        "_rank", kind="stable").drop(columns="_rank")
    more = (f"<p>{len(ranked) - len(shown)} more flagged subject(s): every subject's flags are in "
            "<code>cohort/measures.csv</code> (<code>qc_flags</code>).</p>" if len(ranked) > len(shown) else "")
    return ("<h3>Subjects per flag</h3>" + _table(counts)
            + "<h3>Flags per subject, most flags first</h3>" + _table(rows) + more)


def render_html(data: dict[str, Any], *, title: str = "ssll cohort report", max_montages: int = 40,
                max_review: int = 10, max_curves: int = 6, max_rows: int = 500) -> str:
    """The report page (see module docstring).

    The flagged and the failed subjects are tabled up to ``max_rows`` subjects each (the flagged with a
    count per flag first; all of them are in ``cohort/measures.csv`` and ``failed.tsv``), and subjects of
    the sheet that no run has started yet (a large sheet run in chunks) are counted, not listed.
    QC montages are embedded for at most ``max_montages`` flagged subjects (most flags first): a
    large cohort's page stays small; the others are named with the folder of their montages. The
    ``max_review`` segmentations of lowest expected Dice are listed for review. At most ``max_curves``
    volume curves are embedded, those flagged ``phase_off_curve`` first.
    """
    m, failed, flags, bench = data["measures"], data["failed"], data["flags"], data["benchmarks"]
    n_flagged = flags["subject"].nunique() if not flags.empty else 0
    todo = failed[failed["stage"] == NOT_RUN] if not failed.empty else failed
    failed = failed[failed["stage"] != NOT_RUN] if not failed.empty else failed
    cols = {**MEASURES, **{f"refined_{k}": f"{v}, refined" for k, v in MEASURES.items()}}
    parts = [f"<h1>{html.escape(title)}</h1>",
             (f'<p class="counts"><b>{len(data["subjects"])}</b> subjects: <b>{len(m)}</b> done, '
              f'<b>{n_flagged}</b> flagged, <b>{len(failed)}</b> failed'
              + (f', <b>{len(todo)}</b> not run yet' if len(todo) else "") + ".</p>"),
             "<h2>Clinical measures</h2>", _table(_mean_sd(m, cols)) if not m.empty else "<p><i>none yet</i></p>",
             _histograms(m), _bullseyes(m),
             "<h2>Evaluation against ground truth</h2>", _evaluation_section(data),
             "<h2>Flagged subjects</h2>", _flags_section(flags, max_rows=max_rows)]
    scores = data.get("expected_dice", pd.DataFrame())
    if not scores.empty:
        main = [c for c in ("lv_cavity", "lv_wall", "rv_cavity") if c in scores.columns]
        low = scores.assign(lowest=scores[main].astype(float).min(axis=1)).nsmallest(max_review, "lowest")
        parts += [f"<h3>Review first: the {len(low)} segmentation(s) of lowest expected Dice</h3>",
                  ("<p>The Dice the network expects of its own labels under its class probabilities (no ground truth "
                   f"needed; flagged below {' / '.join(f'{v:.2f}' for v in data.get('min_expected_dice', [MIN_EXPECTED_DICE]))}"
                   " for the LV cavity, LV wall or RV cavity). The whole "
                   "cohort's are in <code>cohort/measures.csv</code>.</p>"), _table(low.round(3))]
    if not flags.empty:
        ranked = flags["subject"].value_counts(sort=True).index.tolist()  # most flags first
        shown, rest = ranked[:max_montages], ranked[max_montages:]
        for s in shown:
            for ph in ("ED", "ES"):
                png = result_paths(data["results"], s)["qc"] / f"{ph}.png"
                if png.is_file():
                    parts.append(f'<figure><img alt="QC {html.escape(s)} {ph}" src="{_photo_file(png)}">'
                                 f"<figcaption>{html.escape(s)} {ph}</figcaption></figure>")
        if rest:  # named up to max_rows (50,000 flagged names would be half a megabyte of one line)
            named = rest[:max_rows]
            more = (f" and {len(rest) - len(named)} more (all in <code>cohort/measures.csv</code>, column "
                    "<code>qc_flags</code>)" if len(rest) > len(named) else "")
            parts.append(f"<p>{len(rest)} more flagged subject(s); their montages are in "
                         f"<code>{html.escape(str(data['results']))}/qc/&lt;subject&gt;/</code>: "
                         f"{html.escape(', '.join(named))}{more}</p>")
    parts += [_cycle_section(data, max_curves=max_curves), "<h2>Failed subjects</h2>", _table(failed.head(max_rows)),
              (f"<p>{len(failed) - max_rows} more failed subject(s) in <code>failed.tsv</code>.</p>"
               if len(failed) > max_rows else ""),
              (f"<p>{len(todo)} subject(s) of the sheet not run yet (no logs): listed in <code>failed.tsv</code> with "
               f"stage <code>{NOT_RUN}</code>.</p>" if len(todo) else ""),
              "<h2>Runtimes per stage</h2>"]
    if not bench.empty:
        rt = bench.groupby("stage").agg(jobs=("seconds", "size"), mean_s=("seconds", "mean"), max_s=("seconds", "max"),
                                        total_s=("seconds", "sum"), max_rss_mb=("max_rss_mb", "max")).reset_index()
        parts.append(_table(rt))
    else:
        parts.append("<p><i>no benchmark files</i></p>")
    style = ("body{font-family:sans-serif;margin:2em;max-width:1400px} table.t{border-collapse:collapse;font-size:13px}"
             " table.t td,table.t th{padding:2px 8px;border-bottom:1px solid #ddd} img{max-width:100%}"
             " .counts{font-size:18px}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")


def run_report(*, sheet: PathLike, results: PathLike, logs: PathLike, benchmarks: PathLike, out_html: PathLike,
               out_failed: PathLike | None = None) -> dict[str, Any]:
    """I/O layer of ``ssll report``: write the HTML report (and a TSV of failed subjects)."""
    from ssll.io import atomic_path

    data = collect(sheet=sheet, results=results, logs=logs, benchmarks=benchmarks)
    with atomic_path(out_html) as tmp:
        tmp.write_text(render_html(data))
    if out_failed:
        with atomic_path(out_failed) as tmp:
            data["failed"].reindex(columns=["subject", "stage", "reason"]).to_csv(tmp, sep="\t", index=False)
    return data
