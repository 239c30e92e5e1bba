rule refine:
    """Shape refinement of one segmentation: landmark affine, NMI selection, L B-spline FFDs, patch fusion.

    One job runs the subject's L registrations in one process (see README: per-job overhead).
    """
    input:
        image=f"{RESULTS}/preprocess/{{subject}}/{{phase}}.nii.gz",
        record=f"{RESULTS}/preprocess/{{subject}}/{{phase}}.json",
        labels=f"{RESULTS}/segment/{{subject}}/{{phase}}_labels.nii.gz",
        landmarks=f"{RESULTS}/landmarks/{{subject}}/{{phase}}.json",
        bank=f"{BANK}/atlases.tsv",
    output:
        labels=f"{RESULTS}/refine/{{subject}}/{{phase}}_labels.nii.gz",
        original=f"{RESULTS}/refine/{{subject}}/{{phase}}_labels_original.nii.gz",
        record=f"{RESULTS}/refine/{{subject}}/{{phase}}.json",
    log:
        "logs/refine/{subject}_{phase}.log",
    benchmark:
        "benchmarks/refine/{subject}_{phase}.tsv"
    conda:
        "../../envs/ssll.yaml"
    threads: 2
    resources:
        mem_mb=4000,
    params:
        bank=get_bank_dir,
        cfg=refine_params(),
    shell:
        "ssll refine --subject {wildcards.subject} --image {input.image} --labels {input.labels} --landmarks {input.landmarks} --record {input.record} --bank {params.bank:q} --out-labels {output.labels} --out-original {output.original} --out-record {output.record} --params {params.cfg:q} > {log} 2>&1"


rule surface:
    """Surface meshes of the refined model: one VTK (label cell scalar) and a PLY per structure beside it."""
    input:
        rules.refine.output.labels,
    output:
        f"{RESULTS}/mesh/{{subject}}/{{phase}}.vtk",
    log:
        "logs/surface/{subject}_{phase}.log",
    conda:
        "../../envs/ssll.yaml"
    shell:
        "ssll surface --subject {wildcards.subject} --labels {input} --out-vtk {output} > {log} 2>&1"
