rule ingest:
    """Study (4D NIfTI, DICOM cine folder or ED/ES files) -> ED and ES volumes on the input grid."""
    input:
        get_study_inputs,
    output:
        ed=f"{RESULTS}/ingest/{{subject}}/ED.nii.gz",
        es=f"{RESULTS}/ingest/{{subject}}/ES.nii.gz",
        record=f"{RESULTS}/ingest/{{subject}}/frames.json",
    log:
        "logs/ingest/{subject}.log",
    benchmark:
        "benchmarks/ingest/{subject}.tsv"
    conda:
        "../../envs/ssll.yaml"
    params:
        args=get_ingest_args,
    shell:
        "ssll ingest --subject {wildcards.subject} {params.args} --out-ed {output.ed} --out-es {output.es} --out-record {output.record} > {log} 2>&1"
