# Training: one rule, one loop, for every experiment and sweep point in config.yaml; one job per seed.


rule train_model:
    input:
        data=DATA,
        weights=get_weights_input,
        teacher=get_teacher_input,
    output:
        model=seed_path("model.pt"),
        history=seed_path("history.csv"),
        summary=seed_path("model_summary.txt"),
    log:
        f"{LOGS}/train_model/{{experiment}}/seed-{{seed}}.log",
    benchmark:
        f"{BENCHMARKS}/train_model/{{experiment}}/seed-{{seed}}.tsv"
    threads: 4
    # What the job needs wherever it runs; a site's partition and account are the profile's.
    # Here, not in a profile, so that --set-resources on the command line cannot drop them.
    resources:
        gpu=GPU_REQUEST,
        mem_mb=16000,
        runtime=240,  # minutes: ResNet-18's 10 epochs with room; a killed job resumes
    params:
        settings=get_experiment_settings,
        weights=get_weights_argument,
        teacher=get_teacher_argument,
        experiment=get_base_experiment,
        gpu=get_gpu_flag,
    shell:
        "python -m fashion_cnn train-model --config-json {params.settings:q} --experiment {params.experiment:q}"
        " --name {wildcards.experiment:q}"
        " --data {input.data:q} --model {output.model:q} --history {output.history:q}"
        " --summary {output.summary:q} {params.weights:q} {params.teacher:q} --threads {threads:q}"
        " {params.gpu:q} --log {log:q}"
