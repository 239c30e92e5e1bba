rule cycle:
    """Every frame of a cine subject segmented: the volume curve, ED and ES by the LV cavity (config cycle: true)."""
    input:
        image=get_cine,
    output:
        tsv=f"{RESULTS}/cycle/{{subject}}/volumes.tsv",
        json=f"{RESULTS}/cycle/{{subject}}/cycle.json",
        png=f"{RESULTS}/cycle/{{subject}}/curve.png",
    log:
        "logs/cycle/{subject}.log",
    benchmark:
        "benchmarks/cycle/{subject}.tsv"
    conda:
        "../../envs/ssll.yaml"
    threads: 2
    resources:
        mem_mb=4000,
    params:
        network=get_network_args(),
        cfg=section("preprocess"),
    shell:
        "ssll cycle --subject {wildcards.subject} {params.network} --preprocess {params.cfg:q} --image {input.image:q} --out-tsv {output.tsv} --out-json {output.json} --out-png {output.png} > {log} 2>&1"
