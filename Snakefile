# ssll: shape-refined bi-ventricular segmentation of cardiac MR (Duan et al., IEEE TMI 2019)
#
# Run:  snakemake --profile profiles/local            (config/config.yaml, demo subjects)
#
# results/ layout (subject from the sheet, phase in {ED, ES}):
#   ingest/{subject}/{phase}.nii.gz, frames.json      ED/ES volumes on the input grid
#   preprocess/{subject}/{phase}.nii.gz, .json        working grid 1.25x1.25x2 mm, 192x192x80; grid record
#   segment/{subject}/{phase}_labels.nii.gz           SSLLN labels, working grid (0 bg, 1 LV cav, 2 LV wall, 3 RV cav, 4 RV wall)
#   segment/{subject}/{phase}_labels_original.nii.gz  the same on the input grid
#   segment/{subject}/{phase}_landmarkmap.nii.gz      landmark labels 1..6
#   landmarks/{subject}/{phase}.json, .csv, _map.nii.gz  6 landmarks in world mm
#   refine/{subject}/{phase}_labels.nii.gz            refined HR model, working grid; _labels_original on the input grid
#   refine/{subject}/{phase}.json                     selected atlases (NMI), FFD consistency per level, timings
#   measures/{subject}.tsv                            LV/RV volumes (ml), masses (g), SV, EF (%); refined_* from the HR model
#   mesh/{subject}/{phase}.vtk, {phase}_<structure>.ply  surface meshes of the refined model (world mm)
#   evaluate/{subject}.json                           Dice, HD, HD95 vs the sheet's ground truth (where given)
#   qc/{subject}/flags.json                           automatic QC flags
#   cohort/measures.csv, .parquet                     one row per subject, QC flags included
#   cohort/report.html, failed.tsv                    the cohort report; failed subjects with stage and reason
#   qc/{subject}/{phase}.png                          QC montage (labels and landmarks on the image)
#   cycle/{subject}/volumes.tsv, cycle.json, curve.png  with cycle: true, every frame of a cine subject (volume curve)
# logs/{rule}/{subject}.log and benchmarks/{rule}/{subject}.tsv beside results/ (one job per subject and
# stage; a per-volume stage runs ED and ES in one process: `ssll CMD ... --and ED args --and ES args`).
# resources/atlas_bank/: the default atlas bank (HR phantoms segmented by SSLLN-HR), built once.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/ingest.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/segment.smk"
include: "workflow/rules/landmarks.smk"
include: "workflow/rules/atlases.smk"
include: "workflow/rules/refine.smk"
include: "workflow/rules/measures.smk"
include: "workflow/rules/qc.smk"
include: "workflow/rules/cycle.smk"


onerror:
    # some subjects failed (with --keep-going the others finished): write the report anyway, so the
    # failed subjects are listed with the stage and the error line (results/cohort/failed.tsv too)
    shell(
        f"ssll report --sheet '{SUBJECTS_TSV}' --results '{RESULTS}' --out-html '{RESULTS}/cohort/report.html' "
        f"--out-failed '{RESULTS}/cohort/failed.tsv' > logs/report_onerror.log 2>&1 || true"
    )


rule all:
    default_target: True
    input:
        final_targets,
