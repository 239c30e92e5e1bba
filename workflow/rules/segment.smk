rule segment:
    """SSLLN segmentation and landmark maps of a subject's ED and ES volumes (one model load)."""
    input:
        images=expand(
            f"{RESULTS}/preprocess/{{{{subject}}}}/{{phase}}.nii.gz", phase=PHASES
        ),
        records=expand(
            f"{RESULTS}/preprocess/{{{{subject}}}}/{{phase}}.json", phase=PHASES
        ),
    output:
        labels=expand(
            f"{RESULTS}/segment/{{{{subject}}}}/{{phase}}_labels.nii.gz", phase=PHASES
        ),
        original=expand(
            f"{RESULTS}/segment/{{{{subject}}}}/{{phase}}_labels_original.nii.gz",
            phase=PHASES,
        ),
        landmarkmap=expand(
            f"{RESULTS}/segment/{{{{subject}}}}/{{phase}}_landmarkmap.nii.gz",
            phase=PHASES,
        ),
        confidence=expand(
            f"{RESULTS}/segment/{{{{subject}}}}/{{phase}}_landmark_confidence.json",
            phase=PHASES,
        ),
        expected_dice=expand(
            f"{RESULTS}/segment/{{{{subject}}}}/{{phase}}_expected_dice.json",
            phase=PHASES,
        ),
        orientation=expand(
            f"{RESULTS}/segment/{{{{subject}}}}/{{phase}}_orientation.json",
            phase=PHASES,
        ),
    log:
        "logs/segment/{subject}.log",
    benchmark:
        "benchmarks/segment/{subject}.tsv"
    conda:
        "../../envs/ssll.yaml"
    threads: 2
    resources:
        mem_mb=4000,
    params:
        network=get_network_args(),
        outdir=f"{RESULTS}/segment/{{subject}}",
    shell:
        "ssll segment --subject {wildcards.subject} {params.network} --image {input.images[0]} --record {input.records[0]} --phase ED --image {input.images[1]} --record {input.records[1]} --phase ES --out-dir {params.outdir} > {log} 2>&1"
