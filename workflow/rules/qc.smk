rule qc:
    """QC montage: short-axis slices base to apex and two long-axis cuts; SSLLN labels and landmarks, refined model below."""
    input:
        image=f"{RESULTS}/preprocess/{{subject}}/{{phase}}.nii.gz",
        labels=f"{RESULTS}/segment/{{subject}}/{{phase}}_labels.nii.gz",
        landmarks=f"{RESULTS}/landmarks/{{subject}}/{{phase}}.json",
        refined=f"{RESULTS}/refine/{{subject}}/{{phase}}_labels.nii.gz",
    output:
        f"{RESULTS}/qc/{{subject}}/{{phase}}.png",
    log:
        "logs/qc/{subject}_{phase}.log",
    conda:
        "../../envs/ssll.yaml"
    shell:
        "ssll qc --subject {wildcards.subject} --image {input.image} --labels {input.labels} --landmarks {input.landmarks} --refined {input.refined} --out-png {output} > {log} 2>&1"


rule qc_flags:
    """Automatic QC flags of a subject: missing or broken structures, measures out of range,
    open LV wall, implausible landmarks, refinement disagreeing or not converged."""
    input:
        ed_labels=f"{RESULTS}/segment/{{subject}}/ED_labels.nii.gz",
        es_labels=f"{RESULTS}/segment/{{subject}}/ES_labels.nii.gz",
        ed_refined=f"{RESULTS}/refine/{{subject}}/ED_labels.nii.gz",
        es_refined=f"{RESULTS}/refine/{{subject}}/ES_labels.nii.gz",
        ed_landmarks=f"{RESULTS}/landmarks/{{subject}}/ED.json",
        es_landmarks=f"{RESULTS}/landmarks/{{subject}}/ES.json",
        ed_refine_record=f"{RESULTS}/refine/{{subject}}/ED.json",
        es_refine_record=f"{RESULTS}/refine/{{subject}}/ES.json",
        ed_record=f"{RESULTS}/preprocess/{{subject}}/ED.json",
        es_record=f"{RESULTS}/preprocess/{{subject}}/ES.json",
        measures=f"{RESULTS}/measures/{{subject}}.tsv",
    output:
        f"{RESULTS}/qc/{{subject}}/flags.json",
    log:
        "logs/qc_flags/{subject}.log",
    conda:
        "../../envs/ssll.yaml"
    shell:
        "ssll qc-flags --subject {wildcards.subject} --ed-labels {input.ed_labels} --es-labels {input.es_labels} --ed-refined {input.ed_refined} --es-refined {input.es_refined} --ed-landmarks {input.ed_landmarks} --es-landmarks {input.es_landmarks} --ed-refine-record {input.ed_refine_record} --es-refine-record {input.es_refine_record} --ed-record {input.ed_record} --es-record {input.es_record} --measures {input.measures} --out-json {output} > {log} 2>&1"
