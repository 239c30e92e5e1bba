rule qc:
    """Quality control of a subject: the QC montages (short-axis slices and two long-axis cuts,
    shown in the orientation the volume was segmented in; SSLLN labels and landmarks, refined
    model below) of ED and ES, and the automatic QC flags (missing or broken structures,
    measures out of range, open LV wall, implausible landmarks, low expected Dice, refinement
    disagreeing or not converged, ED or ES off the volume curve where there is a cycle).
    """
    input:
        image=by_phase(f"{RESULTS}/preprocess/{{subject}}/{{phase}}.nii.gz"),
        record=by_phase(f"{RESULTS}/preprocess/{{subject}}/{{phase}}.json"),
        labels=by_phase(f"{RESULTS}/segment/{{subject}}/{{phase}}_labels.nii.gz"),
        expected_dice=by_phase(
            f"{RESULTS}/segment/{{subject}}/{{phase}}_expected_dice.json"
        ),
        orientation=by_phase(
            f"{RESULTS}/segment/{{subject}}/{{phase}}_orientation.json"
        ),
        landmarks=by_phase(f"{RESULTS}/landmarks/{{subject}}/{{phase}}.json"),
        refined=by_phase(f"{RESULTS}/refine/{{subject}}/{{phase}}_labels.nii.gz"),
        refine_record=by_phase(f"{RESULTS}/refine/{{subject}}/{{phase}}.json"),
        measures=f"{RESULTS}/measures/{{subject}}.tsv",
        cycle=get_qc_cycle_inputs,
    output:
        png=by_phase(f"{RESULTS}/qc/{{subject}}/{{phase}}.png"),
        flags=f"{RESULTS}/qc/{{subject}}/flags.json",
    log:
        "logs/qc/{subject}.log",
    conda:
        "../../envs/ssll.yaml"
    params:
        flags=get_qc_flags_args(),
        cycle=get_qc_cycle_args,
    shell:
        "(ssll qc --subject {wildcards.subject}"
        + per_phase(
            "--image {input.image[#]} --labels {input.labels[#]} --landmarks {input.landmarks[#]} --refined {input.refined[#]} --orientation {input.orientation[#]} --out-png {output.png[#]}"
        )
        + " && ssll qc-flags --subject {wildcards.subject}"
        " --ed-labels {input.labels[0]} --es-labels {input.labels[1]} --ed-refined {input.refined[0]} --es-refined {input.refined[1]}"
        " --ed-landmarks {input.landmarks[0]} --es-landmarks {input.landmarks[1]} --ed-refine-record {input.refine_record[0]}"
        " --es-refine-record {input.refine_record[1]} --ed-record {input.record[0]} --es-record {input.record[1]}"
        " --ed-expected-dice {input.expected_dice[0]} --es-expected-dice {input.expected_dice[1]}"
        " --ed-orientation {input.orientation[0]} --es-orientation {input.orientation[1]}"
        " --measures {input.measures} {params.flags} {params.cycle} --out-json {output.flags}) > {log} 2>&1"
