rule atlas_phantoms:
    """HR phantoms for the default atlas bank (ED and ES per subject) and their atlas sheet."""
    output:
        "resources/atlas_bank/phantoms/atlas_sheet.tsv",
    log:
        "logs/atlas_phantoms.log",
    benchmark:
        "benchmarks/atlas_phantoms.tsv"
    conda:
        "../../envs/ssll.yaml"
    params:
        biv_me=config["atlas_bank"]["biv_me"],
        n=config["atlas_bank"]["phantom_subjects"],
        seed=config["atlas_bank"]["first_seed"],
        outdir=get_output_dir,
    shell:
        "ssll phantom --biv-me {params.biv_me:q} --n {params.n} --first-seed {params.seed} --out-dir {params.outdir} > {log} 2>&1"


rule atlas_bank:
    """The default atlas bank: the phantoms segmented by SSLLN-HR (network labels and landmarks)."""
    input:
        rules.atlas_phantoms.output,
    output:
        "resources/atlas_bank/bank/atlases.tsv",
    log:
        "logs/atlas_bank.log",
    benchmark:
        "benchmarks/atlas_bank.tsv"
    conda:
        "../../envs/ssll.yaml"
    threads: 2
    resources:
        mem_mb=4000,
    params:
        weights=get_hr_weights_arg(),
        outdir=get_output_dir,
    shell:
        "ssll atlas build --sheet {input} {params.weights} --out-dir {params.outdir} > {log} 2>&1"
