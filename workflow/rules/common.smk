# Sheet and config loading, wildcard constraints, input functions. No rule logic here.
import json

import pandas as pd
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from ssll.subjects import SUBJECT_ID_PATTERN

validate(config, "../schemas/config.schema.yaml")

SUBJECTS_TSV = config["subjects"]
subjects = pd.read_csv(SUBJECTS_TSV, sep="\t", dtype=str, comment="#").fillna("")
validate(subjects, "../schemas/subjects.schema.yaml")
_dups = subjects["subject"][subjects["subject"].duplicated()].tolist()
if _dups:
    raise WorkflowError(f"{SUBJECTS_TSV}: duplicate subject ids {_dups}")
for _row in subjects.itertuples():
    if not (_row.image or (_row.ed_image and _row.es_image)):
        raise WorkflowError(
            f"{SUBJECTS_TSV}: subject {_row.subject}: give image, or ed_image and es_image"
        )
subjects = subjects.set_index("subject", drop=False)

SUBJECTS = subjects["subject"].tolist()
PHASES = ["ED", "ES"]
RESULTS = config["results"]


wildcard_constraints:
    subject=SUBJECT_ID_PATTERN.strip("^$"),
    phase="ED|ES",


def get_study_inputs(wildcards):
    row = subjects.loc[wildcards.subject]
    return [row.image] if row.image else [row.ed_image, row.es_image]


def get_ingest_args(wildcards):
    row = subjects.loc[wildcards.subject]
    if row.image:
        args = f"--image '{row.image}'"
    else:
        args = f"--ed-image '{row.ed_image}' --es-image '{row.es_image}'"
    if row.get("ed_frame", ""):
        args += f" --ed {int(row.ed_frame)}"
    if row.get("es_frame", ""):
        args += f" --es {int(row.es_frame)}"
    return args


def section(name):
    return json.dumps(config.get(name, {}), sort_keys=True)


def get_weights_arg():
    w = config["segment"]["weights"]
    return f"--weights '{w}'" if w else ""


def final_targets():
    return [
        *expand(
            f"{RESULTS}/landmarks/{{subject}}/{{phase}}.json",
            subject=SUBJECTS,
            phase=PHASES,
        ),
        *expand(
            f"{RESULTS}/qc/{{subject}}/{{phase}}.png", subject=SUBJECTS, phase=PHASES
        ),
        f"{RESULTS}/cohort/measures.csv",
    ]
