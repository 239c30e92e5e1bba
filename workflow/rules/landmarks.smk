rule landmarks:
    """Landmark map -> the 6 landmarks in world coordinates (mm)."""
    input:
        landmarkmap=f"{RESULTS}/segment/{{subject}}/{{phase}}_landmarkmap.nii.gz",
        confidence=f"{RESULTS}/segment/{{subject}}/{{phase}}_landmark_confidence.json",
    output:
        json=f"{RESULTS}/landmarks/{{subject}}/{{phase}}.json",
        csv=f"{RESULTS}/landmarks/{{subject}}/{{phase}}.csv",
        map=f"{RESULTS}/landmarks/{{subject}}/{{phase}}_map.nii.gz",
    log:
        "logs/landmarks/{subject}_{phase}.log",
    benchmark:
        "benchmarks/landmarks/{subject}_{phase}.tsv"
    conda:
        "../../envs/ssll.yaml"
    shell:
        "ssll landmarks --subject {wildcards.subject} --landmark-map {input.landmarkmap} --confidence {input.confidence} --out-json {output.json} --out-csv {output.csv} --out-map {output.map} > {log} 2>&1"
