# Sheet and config loading, wildcard constraints, input functions. No rule logic here.
import json
import os
import shlex
import sys

import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from ssll.errors import SsllError
from ssll.subjects import SUBJECT_ID_PATTERN, missing_inputs, read_sheet_table

validate(config, "../schemas/config.schema.yaml")

# Every job reads this file again (a SLURM job twice), so nothing here may cost per subject of the sheet
# more than a vectorised pass: the sheet is checked column by column (read_sheet_table), and input files
# are looked up for the subjects this run plans only.
SUBJECTS_TSV = config["subjects"]
with open(workflow.source_path("../schemas/subjects.schema.yaml")) as _f:
    _SHEET_SCHEMA = yaml.safe_load(_f)
try:
    subjects = read_sheet_table(SUBJECTS_TSV, _SHEET_SCHEMA)
except SsllError as exc:
    raise WorkflowError(str(exc)) from None

# large cohorts: plan one chunk of the sheet's rows per run (the DAG grows with the subjects); the
# cohort table and report of any run cover every subject of the sheet with results so far
_planned = subjects
if config["chunk_size"]:
    _lo = config["chunk_index"] * config["chunk_size"]
    _planned = subjects.iloc[_lo : _lo + config["chunk_size"]]
# a subject whose input file is missing is left out (the report lists it as failed) instead of
# stopping the whole cohort at DAG construction
MISSING = missing_inputs(_planned)
if workflow.is_main_process:  # said once, not again in every job's log
    for _s, _m in MISSING.items():
        print(
            f"ssll workflow: subject {_s}: input missing: {_m}; left out",
            file=sys.stderr,
        )
SUBJECTS = [s for s in _planned["subject"] if s not in MISSING]
_CINE = set(subjects["subject"][subjects["image"] != ""])
PHASES = ["ED", "ES"]
RESULTS = config["results"]


wildcard_constraints:
    subject=SUBJECT_ID_PATTERN.strip("^$"),
    phase="ED|ES",


def cycle_record(subject):
    """Where the cycle rule writes a subject's cycle record (ED/ES by the LV cavity)."""
    return f"{RESULTS}/cycle/{subject}/cycle.json"


def has_cycle(subject):
    """Whether the run makes a cycle record for this subject (`cycle` or `phases_from_cycle`, given as a cine)."""
    wanted = config.get("cycle", False) or config.get("phases_from_cycle", False)
    return bool(wanted) and subject in _CINE


def frames_from_cycle(subject):
    """With `phases_from_cycle: true`, the cycle record a cine subject's ED / ES come from (None when the sheet
    gives both frames, or the subject is given as ED/ES files)."""
    row = subjects.loc[subject]
    if not (config.get("phases_from_cycle", False) and row.image):
        return None
    if row.get("ed_frame", "") and row.get("es_frame", ""):
        return None
    return cycle_record(subject)


def get_study_inputs(wildcards):
    row = subjects.loc[wildcards.subject]
    cycle = frames_from_cycle(wildcards.subject)
    return (
        ([row.image] + ([cycle] if cycle else []))
        if row.image
        else [row.ed_image, row.es_image]
    )


def get_cine(wildcards):
    return subjects.loc[wildcards.subject, "image"]


def get_ingest_args(wildcards):
    row = subjects.loc[wildcards.subject]
    if row.image:
        args = f"--image {shlex.quote(row.image)}"
    else:
        args = f"--ed-image {shlex.quote(row.ed_image)} --es-image {shlex.quote(row.es_image)}"
    if row.get("ed_frame", ""):
        args += f" --ed {int(row.ed_frame)}"
    if row.get("es_frame", ""):
        args += f" --es {int(row.es_frame)}"
    cycle = frames_from_cycle(wildcards.subject)
    if cycle:
        args += f" --frames-from {shlex.quote(cycle)}"
    return args


def per_phase(args):
    """Shell arguments for one `ssll` process over the subject's phases: `args` once per phase,
    each after `--and` (see ssll.cli.split_groups), with `#` replaced by the phase's index in the
    rule's phase-expanded inputs and outputs."""
    return "".join(f" --and {args.replace('#', str(i))}" for i in range(len(PHASES)))


def by_phase(pattern):
    """One path per phase (ED, ES) from a pattern with {subject} and {phase}: the phase expanded
    now, {subject} left as the rule's wildcard."""
    return [pattern.replace("{phase}", ph) for ph in PHASES]


def working_images(paths):
    """The preprocessed working-grid images: kept, or (keep_working_images: false) deleted by Snakemake
    once every job that reads them is done."""
    return paths if config["keep_working_images"] else temp(paths)


def section(name):
    return json.dumps(config.get(name, {}), sort_keys=True)


def get_network_args():
    """The SSLLN arguments segment and cycle share (config segment: weights, orientation, batch size)."""
    s = config["segment"]
    w = f"--weights {shlex.quote(s['weights'])} " if s["weights"] else ""
    return (
        f"{w}--orientation {s['orientation']} --orientation-margin {float(s['orientation_margin'])}"
        f" --batch-size {int(s['batch_size'])}"
    )


def get_qc_flags_args():
    return f"--min-expected-dice {float(config['qc']['min_expected_dice'])}"


BANK = config["atlas_bank"]["path"] or "resources/atlas_bank/bank"


def get_hr_weights_arg():
    w = config["atlas_bank"]["weights"]
    return f"--weights {shlex.quote(w)}" if w else ""


def get_bank_dir(wildcards, input):
    return os.path.dirname(input.bank)


def get_output_dir(wildcards, output):
    return os.path.dirname(output[0])


def get_results_dir(wildcards, output):
    # results/cohort/report.html -> results
    return os.path.dirname(os.path.dirname(output[0]))


def refine_params():
    return json.dumps(
        {k: config.get(k, {}) for k in ("atlases", "ffd", "fusion", "motion")},
        sort_keys=True,
    )


def get_lr_weights_arg():
    """SSLLN-LR for refine's second segmentation of a motion-corrected stack (config segment: weights)."""
    w = config["segment"]["weights"]
    return f"--weights {shlex.quote(w)}" if w else ""


# Inputs over the whole run's subjects are input functions, not lists: a function is called only when its
# rule is in the DAG, so a job of one subject (in its own process on a cluster) never builds them.
def final_targets(wildcards=None):
    return [
        *expand(
            f"{RESULTS}/landmarks/{{subject}}/{{phase}}.json",
            subject=SUBJECTS,
            phase=PHASES,
        ),
        *expand(
            f"{RESULTS}/qc/{{subject}}/{{phase}}.png", subject=SUBJECTS, phase=PHASES
        ),
        *expand(
            f"{RESULTS}/refine/{{subject}}/{{phase}}.json",
            subject=SUBJECTS,
            phase=PHASES,
        ),
        *expand(
            f"{RESULTS}/mesh/{{subject}}/{{phase}}.vtk", subject=SUBJECTS, phase=PHASES
        ),
        f"{RESULTS}/cohort/measures.csv",
        f"{RESULTS}/cohort/report.html",
        *get_cycle_targets(),
    ]


def get_cohort_table_inputs(wildcards):
    return {
        "measures": expand(f"{RESULTS}/measures/{{subject}}.tsv", subject=SUBJECTS),
        "flags": expand(f"{RESULTS}/qc/{{subject}}/flags.json", subject=SUBJECTS),
        "cycles": get_cycle_targets(),
    }


def get_report_inputs(wildcards):
    return {
        "table": f"{RESULTS}/cohort/measures.csv",
        "qc": expand(
            f"{RESULTS}/qc/{{subject}}/{{phase}}.png", subject=SUBJECTS, phase=PHASES
        ),
        "evaluations": expand(
            f"{RESULTS}/evaluate/{{subject}}.json", subject=GT_SUBJECTS
        ),
    }


def get_qc_cycle_inputs(wildcards):
    """For the phase_off_curve check: ingest's frames record and the cycle record, where there is a cycle."""
    if not has_cycle(wildcards.subject):
        return []
    return [
        f"{RESULTS}/ingest/{wildcards.subject}/frames.json",
        cycle_record(wildcards.subject),
    ]


def get_qc_cycle_args(wildcards):
    paths = get_qc_cycle_inputs(wildcards)
    return (
        f"--frames {shlex.quote(paths[0])} --cycle {shlex.quote(paths[1])}"
        if paths
        else ""
    )


def get_cycle_targets():
    """The cycle record of every subject the run makes one for (`has_cycle`)."""
    return [cycle_record(s) for s in SUBJECTS if has_cycle(s)]


_WITH_TRUTH = set(
    subjects["subject"][(subjects["gt_ed"] != "") & (subjects["gt_es"] != "")]
)
GT_SUBJECTS = [s for s in SUBJECTS if s in _WITH_TRUTH]


def get_truth(wildcards):
    row = subjects.loc[wildcards.subject]
    return {"ed": row.gt_ed, "es": row.gt_es}


def get_truth_convention(wildcards):
    return subjects.loc[wildcards.subject, "gt_convention"] or "canonical"
