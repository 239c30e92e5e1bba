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
#   measures/{subject}.tsv                            LV/RV volumes (ml), masses (g), SV, EF (%)
#   cohort/measures.csv                               one row per subject
#   qc/{subject}/{phase}.png                          QC montage (labels and landmarks on the image)
# logs/{rule}/{subject}[_{phase}].log and benchmarks/{rule}/... beside results/.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/ingest.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/segment.smk"
include: "workflow/rules/landmarks.smk"
include: "workflow/rules/measures.smk"
include: "workflow/rules/qc.smk"


rule all:
    default_target: True
    input:
        final_targets(),
