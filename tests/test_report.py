"""Evaluation numbers on a hand-computed case, the cohort table (CSV + Parquet), and the HTML
report opened in a real headless Chromium, its screenshot checked."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from ssll.evaluate import overlap_metrics
from ssll.measures import run_cohort_table
from ssll.report import collect, measure_agreement, render_html, run_report


def test_overlap_metrics_hand_computed() -> None:
    # two boxes on a 2 x 2 x 10 mm grid: truth 10x10x4 voxels, prediction shifted by 2 voxels along i
    truth = np.zeros((20, 20, 8), np.uint8)
    truth[5:15, 5:15, 2:6] = 1
    pred = np.zeros_like(truth)
    pred[7:17, 5:15, 2:6] = 1
    m = overlap_metrics(pred, truth, (2.0, 2.0, 10.0))
    assert m["dice_lv_cavity"] == pytest.approx(2 * 8 * 10 * 4 / (2 * 400))  # 0.8
    assert m["hd_lv_cavity_mm"] == pytest.approx(4.0)  # 2 voxels x 2 mm
    assert m["hd95_lv_cavity_mm"] <= 4.0
    assert np.isnan(m["dice_rv_wall"]) and np.isnan(m["hd_rv_wall_mm"])


def test_measure_agreement_known_values() -> None:
    auto = pd.Series([110.0, 120.0, 130.0, 140.0])
    truth = pd.Series([100.0, 112.0, 118.0, 130.0])
    a = measure_agreement(auto, truth)
    assert a["mean_diff"] == pytest.approx(10.0) and a["sd_diff"] == pytest.approx(np.std([10, 8, 12, 10], ddof=1))
    assert a["pearson_r"] == pytest.approx(np.corrcoef(auto, truth)[0, 1])


def _cohort(tmp_path):
    """A finished two-subject run and one failed subject, as the workflow leaves them."""
    res, logs, bench = tmp_path / "results", tmp_path / "logs", tmp_path / "benchmarks"
    for d in (res / "measures", res / "qc" / "s1", res / "qc" / "s2", res / "evaluate", logs / "preprocess", bench / "refine"):
        d.mkdir(parents=True, exist_ok=True)
    sheet = tmp_path / "subjects.tsv"
    for name in "abcdef":
        (tmp_path / name).write_bytes(b"x")
    sheet.write_text("subject\ted_image\tes_image\n" + "".join(
        f"{s}\t{tmp_path / a}\t{tmp_path / b}\n" for s, a, b in (("s1", "a", "b"), ("s2", "c", "d"), ("bad", "e", "f")))
        + f"gone\t{tmp_path / 'nowhere.nii.gz'}\t{tmp_path / 'a'}\n")
    rng = np.random.default_rng(0)
    measures = []
    for s, edv in (("s1", 150.0), ("s2", 180.0)):
        row = {"subject": s, "ed_lv_cavity_ml": edv, "es_lv_cavity_ml": edv / 2, "lv_ef_pct": 50.0,
               "ed_lv_mass_g": 120.0, "ed_rv_cavity_ml": 160.0, "refined_ed_lv_cavity_ml": edv + 3}
        pd.DataFrame([row]).to_csv(res / "measures" / f"{s}.tsv", sep="\t", index=False)
        measures.append(str(res / "measures" / f"{s}.tsv"))
        truth = {"ed_lv_cavity_ml": edv - 5, "es_lv_cavity_ml": edv / 2 + 2, "lv_ef_pct": 48.0, "ed_lv_mass_g": 110.0,
                 "ed_rv_cavity_ml": 150.0}
        ov = [{"method": m, "phase": p, "dice_lv_cavity": 0.9 + rng.random() * 0.05, "hd_lv_cavity_mm": 5.0}
              for m in ("sslln", "refined") for p in ("ED", "ES")]
        (res / "evaluate" / f"{s}.json").write_text(json.dumps({"subject": s, "overlap": ov, "measures_truth": truth}))
        (bench / "refine" / f"{s}_ED.tsv").write_text("s\th:m:s\tmax_rss\n6.5\t0:00:06\t900\n")
    flags = [{"flag": "lv_wall_open", "phase": "ED", "reason": "30% of the border has no LV wall"}]
    s1_scores = {"ED": {"lv_cavity": 0.93, "lv_wall": 0.64, "rv_cavity": 0.88, "rv_wall": 0.41},
                 "ES": {"lv_cavity": 0.85, "lv_wall": 0.81, "rv_cavity": 0.79, "rv_wall": 0.38}}
    s2_scores = {"ED": {"lv_cavity": 0.95, "lv_wall": 0.83, "rv_cavity": 0.90, "rv_wall": None},
                 "ES": {"lv_cavity": 0.91, "lv_wall": 0.84, "rv_cavity": 0.87, "rv_wall": None}}
    (res / "qc" / "s1" / "flags.json").write_text(json.dumps({"subject": "s1", "flags": flags,
                                                              "expected_dice": s1_scores, "min_expected_dice": 0.75}))
    (res / "qc" / "s2" / "flags.json").write_text(json.dumps({"subject": "s2", "flags": [],
                                                              "expected_dice": s2_scores,
                                                              "orientation": {"ED": "rot0", "ES": "rot90+reversed"}}))
    from conftest import biv_phantom

    from ssll.qc import montage

    lab = biv_phantom((64, 60, 12))
    montage(lab / 4.0, lab, (1.5, 1.5, 8.0), res / "qc" / "s1" / "ED.png", title="s1")
    (logs / "preprocess" / "bad.log").write_text(
        "INFO start\nssll preprocess: bad: error: e: not a NIfTI file (truncated gzip)\n")
    # another subject's log whose id starts with "bad" (not in this sheet): not bad's failure
    (logs / "ingest").mkdir()
    (logs / "ingest" / "bad0.log").write_text("ssll ingest: bad0: error: something else\n")
    return sheet, res, logs, bench, measures


def test_cohort_table_csv_and_parquet_with_flags(tmp_path) -> None:
    sheet, res, logs, bench, measures = _cohort(tmp_path)
    # s2 was given as a cine and run with `cycle: true`
    (res / "cycle" / "s2").mkdir(parents=True)
    (res / "cycle" / "s2" / "cycle.json").write_text(json.dumps({
        "subject": "s2", "n_frames": 25, "ed_frame": 0, "es_frame": 9, "ed_lv_cavity_ml": 182.0, "es_lv_cavity_ml": 88.0,
        "lv_ef_pct": 51.6, "ed_rv_cavity_ml": 170.0, "es_rv_cavity_ml": 80.0, "rv_ef_pct": 52.9}))
    run_cohort_table(inputs=measures, out_csv=str(tmp_path / "m.csv"), out_parquet=str(tmp_path / "m.parquet"),
                     flags=[str(res / "qc" / s / "flags.json") for s in ("s1", "s2")],
                     cycles=[str(res / "cycle" / "s2" / "cycle.json")])
    csv = pd.read_csv(tmp_path / "m.csv")
    pq = pd.read_parquet(tmp_path / "m.parquet")
    assert list(csv["qc_n_flags"]) == [1, 0] and csv.loc[0, "qc_flags"] == "lv_wall_open@ED"
    assert list(pq.columns) == list(csv.columns) and pq["ed_lv_cavity_ml"].tolist() == [150.0, 180.0]
    # the network's expected Dice per phase and structure, and the lowest of the LV cavity, LV wall and
    # RV cavity over both phases (the RV wall left out: s1's 0.38 is not its minimum)
    assert csv["ed_expected_dice_lv_wall"].tolist() == [0.64, 0.83]
    assert csv["qc_expected_dice_min"].tolist() == [0.64, 0.83]
    assert csv.loc[0, "es_expected_dice_rv_wall"] == 0.38 and np.isnan(csv.loc[1, "es_expected_dice_rv_wall"])
    # the orientation segment used, where the flags record it (s1's predate it: empty)
    assert csv["es_orientation"].fillna("").tolist() == ["", "rot90+reversed"] and csv.loc[1, "ed_orientation"] == "rot0"
    # the whole cycle where there is one
    assert csv["cycle_es_frame"].tolist()[1] == 9 and csv.loc[1, "cycle_lv_ef_pct"] == 51.6
    assert csv.loc[1, "cycle_lv_esv_ml"] == 88.0 and csv.loc[1, "cycle_n_frames"] == 25
    assert csv.loc[0, ["cycle_n_frames", "cycle_lv_ef_pct", "cycle_rv_ef_pct"]].isna().all()
    # the same table found from the sheet and the results folder (no file list on the command line);
    # subjects of the sheet without measures (failed, missing input) have no row
    run_cohort_table(sheet=str(sheet), results=str(res), out_csv=str(tmp_path / "s.csv"))
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "s.csv"), csv)


def test_report_lists_failures_and_renders_in_chromium(tmp_path) -> None:
    sheet, res, logs, bench, _ = _cohort(tmp_path)
    html_path = tmp_path / "report.html"
    data = run_report(sheet=sheet, results=res, logs=logs, benchmarks=bench, out_html=html_path,
                      out_failed=tmp_path / "failed.tsv")
    failed = pd.read_csv(tmp_path / "failed.tsv", sep="\t")
    assert failed.to_dict("records") == [
        {"subject": "bad", "stage": "preprocess", "reason": "ssll preprocess: bad: error: e: not a NIfTI file (truncated gzip)"},
        {"subject": "gone", "stage": "input", "reason": f"input missing: {tmp_path / 'nowhere.nii.gz'}"}]
    page = html_path.read_text()
    assert "<b>4</b> subjects: <b>2</b> done, <b>1</b> flagged, <b>2</b> failed" in page
    assert "lv_wall_open" in page and "Bland-Altman" in page and "wilcoxon p" in page
    review = page.split("Review first")[1]
    assert review.index("0.64") < review.index("0.79") < review.index("0.83")  # lowest expected Dice first
    assert "flagged below 0.75 for the LV cavity" in review  # the line the qc stage used (s1's flags.json)
    assert "src=\"http" not in page and page.count("src=\"data:image/") >= 3  # self-contained
    assert len(data["measures"]) == 2
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        if os.environ.get("SSLL_REQUIRE_CHROMIUM"):
            pytest.fail("SSLL_REQUIRE_CHROMIUM is set but no chromium is installed")
        pytest.skip("no headless Chromium on this machine")
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=1280,2400", html_path.as_uri()],
                   check=True, capture_output=True, timeout=120)
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB")).astype(float)
    assert img.shape[:2] == (2400, 1280)
    # not blank: text and figures make many dark pixels and colour
    assert (img.mean(-1) < 128).mean() > 0.005 and img.std() > 20


def test_report_embeds_montages_of_the_most_flagged_subjects_only(tmp_path) -> None:
    from conftest import biv_phantom

    from ssll.qc import montage

    sheet, res, logs, bench, _ = _cohort(tmp_path)
    lab = biv_phantom((64, 60, 12))
    montage(lab / 4.0, lab, (1.5, 1.5, 8.0), res / "qc" / "s2" / "ED.png", title="s2")
    two = [{"flag": "lv_wall_open", "phase": "ED", "reason": "r"}, {"flag": "lv_missing", "phase": "ES", "reason": "r"}]
    (res / "qc" / "s2" / "flags.json").write_text(json.dumps({"subject": "s2", "flags": two}))
    page = render_html(collect(sheet=sheet, results=res, logs=logs, benchmarks=bench), max_montages=1)
    assert page.count("<figure>") == 1 and 'alt="QC s2 ED"' in page  # s2 has more flags
    assert "1 more flagged subject(s)" in page and ": s1</p>" in page


def _cycle(res, subject: str, lv: list[float]) -> None:
    """What `ssll cycle` leaves for a subject: cycle.json, volumes.tsv and curve.png (the RV at 90 % of the LV)."""
    from ssll.nn.cycle import CycleResult, plot_curve

    frames = [{"frame": t, "lv_cavity_ml": v, "lv_mass_g": 100.0, "rv_cavity_ml": 0.9 * v, "rv_mass_g": np.nan,
               "expected_dice_min": 0.8} for t, v in enumerate(lv)]
    result = CycleResult(frames, {"orientation": "rot0", "searched": True}, int(np.argmax(lv)), int(np.argmin(lv)))
    d = res / "cycle" / subject
    d.mkdir(parents=True)
    (d / "cycle.json").write_text(json.dumps({"subject": subject, **result.summary()}))
    pd.DataFrame(frames).to_csv(d / "volumes.tsv", sep="\t", index=False)
    plot_curve(result, d / "curve.png", title=subject)


def test_report_shows_the_cycle_beside_the_two_frames(tmp_path) -> None:
    from ssll.report import cycle_vs_frames

    sheet, res, logs, bench, _ = _cohort(tmp_path)
    no_cycle = render_html(collect(sheet=sheet, results=res, logs=logs, benchmarks=bench))
    assert "Cardiac cycle" not in no_cycle and 'alt="cycle ' not in no_cycle  # no section without a cycle
    # s1 (two frames: EDV 150, ESV 75) and s2 (180, 90) given as cines: their curves peak at 148 and 182
    _cycle(res, "s1", [148.0, 120.0, 80.0, 74.0, 110.0, 140.0])
    _cycle(res, "s2", [182.0, 150.0, 100.0, 90.0, 130.0, 170.0])
    off = {"flag": "phase_off_curve", "phase": "ES", "reason": "ES is frame 1 (given), the curve's smallest is 3"}
    (res / "qc" / "s2" / "flags.json").write_text(json.dumps({"subject": "s2", "flags": [off]}))
    data = collect(sheet=sheet, results=res, logs=logs, benchmarks=bench)
    table = cycle_vs_frames(data["cycles"], data["measures"]).set_index("measure")
    lvedv = table.loc["LVEDV (ml)"]
    assert lvedv["n"] == 2 and lvedv["cycle mean"] == pytest.approx(165.0)
    assert lvedv["cycle - frames mean"] == pytest.approx(0.0) and lvedv["cycle - frames sd"] == pytest.approx(np.sqrt(8))
    # ESV: 74 - 75 and 90 - 90; EF from the curve (148-74)/148 = 50 % and (182-90)/182 against 50 % measured
    assert table.loc["LVESV (ml)", "cycle - frames mean"] == pytest.approx(-0.5)
    assert table.loc["LVEF (%)", "cycle mean"] == pytest.approx((50.0 + 100 * 92 / 182) / 2, abs=1e-3)
    # the two-frame table has no RV ESV: the cycle's is shown, with no difference
    assert table.loc["RVESV (ml)", "n both"] == 0 and np.isnan(table.loc["RVESV (ml)", "cycle - frames mean"])
    page = render_html(data, max_curves=1)
    section = page.split("<h2>Cardiac cycle</h2>")[1].split("<h2>")[0]
    assert "<b>2</b> subject(s) with every frame" in section and "<b>1</b> subject(s) flagged" in section
    assert 'alt="cohort volume curves"' in section
    # one curve embedded: the flagged subject's, though s1 comes first in the sheet
    assert section.count('alt="cycle ') == 1 and 'alt="cycle s2"' in section and "off the curve" in section
    assert "1 more curve(s)" in section


def test_report_draws_the_aha_bullseyes_where_measures_have_them(tmp_path) -> None:
    sheet, res, logs, bench, _ = _cohort(tmp_path)
    assert 'alt="AHA bullseye"' not in render_html(collect(sheet=sheet, results=res, logs=logs, benchmarks=bench))
    for s, t in (("s1", 8.0), ("s2", 10.0)):
        m = pd.read_csv(res / "measures" / f"{s}.tsv", sep="\t")
        for n in range(1, 17):
            m[f"ed_wall_thickness_aha{n:02d}_mm"] = t + 0.1 * n
            m[f"wall_thickening_aha{n:02d}_pct"] = 40.0 if n != 5 else np.nan
        m.to_csv(res / "measures" / f"{s}.tsv", sep="\t", index=False)
    page = render_html(collect(sheet=sheet, results=res, logs=logs, benchmarks=bench))
    assert page.count('alt="AHA bullseye"') == 1


def test_qc_montages_are_embedded_as_jpeg_close_to_the_png(tmp_path) -> None:
    import base64
    import io

    from conftest import biv_phantom
    from PIL import Image

    from ssll.qc import montage

    sheet, res, logs, bench, _ = _cohort(tmp_path)
    rng = np.random.default_rng(0)
    lab = biv_phantom((64, 60, 12))
    png = res / "qc" / "s1" / "ED.png"
    montage(np.clip(lab / 4.0 + rng.normal(0, 0.1, lab.shape), 0, 1), lab, (1.5, 1.5, 8.0), png, title="s1")
    page = render_html(collect(sheet=sheet, results=res, logs=logs, benchmarks=bench))
    fig = page.split('alt="QC s1 ED" src="')[1].split('"')[0]
    assert fig.startswith("data:image/jpeg;base64,")
    raw = base64.b64decode(fig.split(",", 1)[1])
    assert len(raw) < png.stat().st_size / 2  # an MR montage as JPEG: a fraction of the PNG
    got = np.asarray(Image.open(io.BytesIO(raw)).convert("RGB")).astype(float)
    want = np.asarray(Image.open(png).convert("RGB")).astype(float)
    assert got.shape == want.shape and np.abs(got - want).mean() < 4  # the same picture (grey levels 0-255)


def test_subjects_not_run_yet_are_counted_not_failed_and_long_tables_are_cut(tmp_path) -> None:
    # a large sheet run in chunks: "later" has no logs (a later chunk), "halted" has a log without an error line
    sheet, res, logs, bench, _ = _cohort(tmp_path)
    with sheet.open("a") as fh:
        for s in ("later", "halted"):
            fh.write(f"{s}\t{tmp_path / 'a'}\t{tmp_path / 'b'}\n")
    (logs / "preprocess" / "halted.log").write_text("INFO start\nINFO preprocessing ED\n")
    html_path, failed_tsv = tmp_path / "report.html", tmp_path / "failed.tsv"
    run_report(sheet=sheet, results=res, logs=logs, benchmarks=bench, out_html=html_path, out_failed=failed_tsv)
    stages = dict(pd.read_csv(failed_tsv, sep="\t")[["subject", "stage"]].itertuples(index=False))
    assert stages == {"bad": "preprocess", "gone": "input", "later": "not run", "halted": "stopped"}
    page = html_path.read_text()
    assert "<b>6</b> subjects: <b>2</b> done, <b>1</b> flagged, <b>3</b> failed, <b>1</b> not run yet." in page
    failed_part = page.split("<h2>Failed subjects</h2>")[1]
    assert "halted" in failed_part and "later" not in failed_part.split("not run yet")[0]
    # flags: a count per flag and phase, then at most max_rows subjects' rows (most flags first)
    two = [{"flag": "lv_wall_open", "phase": "ED", "reason": "r"}, {"flag": "lv_missing", "phase": "ES", "reason": "r"}]
    (res / "qc" / "s2" / "flags.json").write_text(json.dumps({"subject": "s2", "flags": two}))
    page = render_html(collect(sheet=sheet, results=res, logs=logs, benchmarks=bench), max_rows=1)
    flagged = page.split("<h2>Flagged subjects</h2>")[1].split("<h2>")[0]
    cells = re.sub(r">\s+<", "><", flagged)
    assert "<th>flag</th><th>subjects at ED</th><th>subjects at ES</th>" in cells
    assert "<td>lv_missing</td><td>0</td><td>1</td>" in cells and "<td>lv_wall_open</td><td>2</td><td>0</td>" in cells
    assert "1 more flagged subject(s)" in flagged and ">s2<" in flagged and ">s1<" not in flagged.split("more")[0]
    assert "2 more failed subject(s)" in page
    # without montages, the flagged subjects' names stop at max_rows too (most flags first), the rest counted
    page = render_html(collect(sheet=sheet, results=res, logs=logs, benchmarks=bench), max_rows=1, max_montages=0)
    names = next(p for p in page.split("<p>") if "their montages are in" in p)
    assert names.startswith("2 more flagged subject(s)") and ": s2 and 1 more (all in" in names, names
