rule preprocess:
    """Resample to 1.25x1.25x2 mm, fit to 192x192x80, clip to the 1st-99th percentile, scale to [0, 1]."""
    input:
        f"{RESULTS}/ingest/{{subject}}/{{phase}}.nii.gz",
    output:
        image=f"{RESULTS}/preprocess/{{subject}}/{{phase}}.nii.gz",
        record=f"{RESULTS}/preprocess/{{subject}}/{{phase}}.json",
    log:
        "logs/preprocess/{subject}_{phase}.log",
    benchmark:
        "benchmarks/preprocess/{subject}_{phase}.tsv"
    conda:
        "../../envs/ssll.yaml"
    params:
        cfg=section("preprocess"),
    shell:
        "ssll preprocess --subject {wildcards.subject} --image {input} --out-image {output.image} --out-record {output.record} --params {params.cfg:q} > {log} 2>&1"
