rule measures:
    """LV/RV volumes, masses, stroke volumes, EF and LV wall thickness per AHA segment from the SSLLN labels
    on the input grid and from the refined HR models (refined_* columns)."""
    input:
        ed=f"{RESULTS}/segment/{{subject}}/ED_labels_original.nii.gz",
        es=f"{RESULTS}/segment/{{subject}}/ES_labels_original.nii.gz",
        ed_refined=f"{RESULTS}/refine/{{subject}}/ED_labels.nii.gz",
        es_refined=f"{RESULTS}/refine/{{subject}}/ES_labels.nii.gz",
        ed_landmarks=f"{RESULTS}/landmarks/{{subject}}/ED.json",
        es_landmarks=f"{RESULTS}/landmarks/{{subject}}/ES.json",
    output:
        f"{RESULTS}/measures/{{subject}}.tsv",
    log:
        "logs/measures/{subject}.log",
    benchmark:
        "benchmarks/measures/{subject}.tsv"
    conda:
        "../../envs/ssll.yaml"
    shell:
        "ssll measures --subject {wildcards.subject} --ed-labels {input.ed} --es-labels {input.es} --ed-refined {input.ed_refined} --es-refined {input.es_refined} --ed-landmarks {input.ed_landmarks} --es-landmarks {input.es_landmarks} --out-tsv {output} > {log} 2>&1"


rule cohort_table:
    """One row per subject: the cohort's measures and QC flags (CSV and Parquet).

    Runs after this run's subjects; lists every subject of the sheet with results (all chunks so
    far), found from the sheet rather than a file list (a shell command is limited to 128 KiB).
    """
    input:
        unpack(get_cohort_table_inputs),
    output:
        csv=f"{RESULTS}/cohort/measures.csv",
        parquet=f"{RESULTS}/cohort/measures.parquet",
    log:
        "logs/cohort_table.log",
    conda:
        "../../envs/ssll.yaml"
    params:
        sheet=SUBJECTS_TSV,
        results=get_results_dir,
    shell:
        "ssll cohort-table --sheet {params.sheet:q} --results {params.results:q} --out-csv {output.csv} --out-parquet {output.parquet} > {log} 2>&1"


rule evaluate:
    """Dice, HD and HD95 (mm) of the SSLLN segmentation and the refined model against the sheet's ground truth."""
    input:
        unpack(get_truth),
        ed_labels=f"{RESULTS}/segment/{{subject}}/ED_labels_original.nii.gz",
        es_labels=f"{RESULTS}/segment/{{subject}}/ES_labels_original.nii.gz",
        ed_refined=f"{RESULTS}/refine/{{subject}}/ED_labels_original.nii.gz",
        es_refined=f"{RESULTS}/refine/{{subject}}/ES_labels_original.nii.gz",
    output:
        f"{RESULTS}/evaluate/{{subject}}.json",
    log:
        "logs/evaluate/{subject}.log",
    conda:
        "../../envs/ssll.yaml"
    params:
        convention=get_truth_convention,
    shell:
        "ssll evaluate --subject {wildcards.subject} --ed-truth {input.ed:q} --es-truth {input.es:q} --ed-labels {input.ed_labels} --es-labels {input.es_labels} --ed-refined {input.ed_refined} --es-refined {input.es_refined} --convention {params.convention} --out-json {output} > {log} 2>&1"


rule report:
    """The cohort report: one self-contained HTML file (measures, evaluation, flags, failures, runtimes)."""
    input:
        unpack(get_report_inputs),
    output:
        html=f"{RESULTS}/cohort/report.html",
        failed=f"{RESULTS}/cohort/failed.tsv",
    log:
        "logs/report.log",
    conda:
        "../../envs/ssll.yaml"
    params:
        sheet=SUBJECTS_TSV,
        results=get_results_dir,
    shell:
        "ssll report --sheet {params.sheet:q} --results {params.results:q} --out-html {output.html} --out-failed {output.failed} > {log} 2>&1"
