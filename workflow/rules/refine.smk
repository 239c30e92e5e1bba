rule refine:
    """Shape refinement of the ED and ES segmentations: landmark affine, NMI selection, L B-spline
    FFDs, patch fusion (with motion: estimate, the breath-hold shifts measured first and the corrected
    stack segmented again by SSLLN-LR on the CPU, in the orientation segment used).

    One job runs the subject's 2 x L registrations in one process (see README: per-job overhead).
    """
    input:
        image=by_phase(f"{RESULTS}/preprocess/{{subject}}/{{phase}}.nii.gz"),
        record=by_phase(f"{RESULTS}/preprocess/{{subject}}/{{phase}}.json"),
        labels=by_phase(f"{RESULTS}/segment/{{subject}}/{{phase}}_labels.nii.gz"),
        landmarks=by_phase(f"{RESULTS}/landmarks/{{subject}}/{{phase}}.json"),
        orientation=by_phase(
            f"{RESULTS}/segment/{{subject}}/{{phase}}_orientation.json"
        ),
        bank=f"{BANK}/atlases.tsv",
    output:
        labels=by_phase(f"{RESULTS}/refine/{{subject}}/{{phase}}_labels.nii.gz"),
        original=by_phase(
            f"{RESULTS}/refine/{{subject}}/{{phase}}_labels_original.nii.gz"
        ),
        record=by_phase(f"{RESULTS}/refine/{{subject}}/{{phase}}.json"),
    log:
        "logs/refine/{subject}.log",
    benchmark:
        "benchmarks/refine/{subject}.tsv"
    conda:
        "../../envs/ssll.yaml"
    threads: 2
    resources:
        mem_mb=4000,
    params:
        bank=get_bank_dir,
        cfg=refine_params(),
        weights=get_lr_weights_arg(),
    shell:
        "ssll refine --subject {wildcards.subject} --bank {params.bank:q} --params {params.cfg:q} {params.weights}"
        + per_phase(
            "--image {input.image[#]} --labels {input.labels[#]} --landmarks {input.landmarks[#]} --record {input.record[#]} --orientation {input.orientation[#]} --out-labels {output.labels[#]} --out-original {output.original[#]} --out-record {output.record[#]}"
        )
        + " > {log} 2>&1"


rule surface:
    """Surface meshes of the refined models (ED, ES): one VTK each (label cell scalar); with `surface: ply: true` a PLY per structure beside it."""
    input:
        labels=by_phase(f"{RESULTS}/refine/{{subject}}/{{phase}}_labels.nii.gz"),
    output:
        vtk=by_phase(f"{RESULTS}/mesh/{{subject}}/{{phase}}.vtk"),
    log:
        "logs/surface/{subject}.log",
    conda:
        "../../envs/ssll.yaml"
    shell:
        "ssll surface --subject {wildcards.subject}"
        + (" --ply" if config["surface"]["ply"] else "")
        + per_phase("--labels {input.labels[#]} --out-vtk {output.vtk[#]}")
        + " > {log} 2>&1"
