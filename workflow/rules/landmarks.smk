rule landmarks:
    """Landmark maps -> the 6 landmarks in world coordinates (mm), ED and ES (one process).

    ED and ES come from one stack: a phase whose landmarks have the other handedness gets its RV
    inserts swapped back (--stack-maps, --stack-labels).
    """
    input:
        landmarkmap=by_phase(
            f"{RESULTS}/segment/{{subject}}/{{phase}}_landmarkmap.nii.gz"
        ),
        labels=by_phase(f"{RESULTS}/segment/{{subject}}/{{phase}}_labels.nii.gz"),
        confidence=by_phase(
            f"{RESULTS}/segment/{{subject}}/{{phase}}_landmark_confidence.json"
        ),
    output:
        json=by_phase(f"{RESULTS}/landmarks/{{subject}}/{{phase}}.json"),
        csv=by_phase(f"{RESULTS}/landmarks/{{subject}}/{{phase}}.csv"),
        map=by_phase(f"{RESULTS}/landmarks/{{subject}}/{{phase}}_map.nii.gz"),
    log:
        "logs/landmarks/{subject}.log",
    benchmark:
        "benchmarks/landmarks/{subject}.tsv"
    conda:
        "../../envs/ssll.yaml"
    shell:
        "ssll landmarks --subject {wildcards.subject}"
        " --stack-maps {input.landmarkmap:q} --stack-labels {input.labels:q}"
        + per_phase(
            "--landmark-map {input.landmarkmap[#]} --confidence {input.confidence[#]} --out-json {output.json[#]} --out-csv {output.csv[#]} --out-map {output.map[#]}"
        )
        + " > {log} 2>&1"
