rule measures:
    """LV/RV volumes, masses, stroke volumes and EF from the SSLLN labels on the input grid."""
    input:
        ed=f"{RESULTS}/segment/{{subject}}/ED_labels_original.nii.gz",
        es=f"{RESULTS}/segment/{{subject}}/ES_labels_original.nii.gz",
    output:
        f"{RESULTS}/measures/{{subject}}.tsv",
    log:
        "logs/measures/{subject}.log",
    benchmark:
        "benchmarks/measures/{subject}.tsv"
    conda:
        "../../envs/ssll.yaml"
    shell:
        "ssll measures --subject {wildcards.subject} --ed-labels {input.ed} --es-labels {input.es} --out-tsv {output} > {log} 2>&1"


rule cohort_table:
    """One row per subject: the cohort's measures."""
    input:
        expand(f"{RESULTS}/measures/{{subject}}.tsv", subject=SUBJECTS),
    output:
        f"{RESULTS}/cohort/measures.csv",
    log:
        "logs/cohort_table.log",
    conda:
        "../../envs/ssll.yaml"
    shell:
        "ssll cohort-table --out-csv {output} {input} > {log} 2>&1"
