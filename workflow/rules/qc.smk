rule qc:
    """QC montage: short-axis slices base to apex and two long-axis cuts, labels and landmarks."""
    input:
        image=f"{RESULTS}/preprocess/{{subject}}/{{phase}}.nii.gz",
        labels=f"{RESULTS}/segment/{{subject}}/{{phase}}_labels.nii.gz",
        landmarks=f"{RESULTS}/landmarks/{{subject}}/{{phase}}.json",
    output:
        f"{RESULTS}/qc/{{subject}}/{{phase}}.png",
    log:
        "logs/qc/{subject}_{phase}.log",
    conda:
        "../../envs/ssll.yaml"
    shell:
        "ssll qc --subject {wildcards.subject} --image {input.image} --labels {input.labels} --landmarks {input.landmarks} --out-png {output} > {log} 2>&1"
