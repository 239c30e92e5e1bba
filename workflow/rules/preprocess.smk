rule preprocess:
    """Resample to 1.25x1.25x2 mm, fit to 192x192x80, clip to the 1st-99th percentile, scale to [0, 1] (ED and ES, one process)."""
    input:
        image=by_phase(f"{RESULTS}/ingest/{{subject}}/{{phase}}.nii.gz"),
    output:
        image=working_images(
            by_phase(f"{RESULTS}/preprocess/{{subject}}/{{phase}}.nii.gz")
        ),
        record=by_phase(f"{RESULTS}/preprocess/{{subject}}/{{phase}}.json"),
    log:
        "logs/preprocess/{subject}.log",
    benchmark:
        "benchmarks/preprocess/{subject}.tsv"
    conda:
        "../../envs/ssll.yaml"
    params:
        cfg=section("preprocess"),
    shell:
        "ssll preprocess --subject {wildcards.subject} --params {params.cfg:q}"
        + per_phase(
            "--image {input.image[#]} --out-image {output.image[#]} --out-record {output.record[#]}"
        )
        + " > {log} 2>&1"
