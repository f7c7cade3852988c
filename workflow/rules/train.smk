# Training: one rule, one loop, for every experiment in config.yaml.


rule train_model:
    input:
        data=DATA,
        weights=get_weights_input,
    output:
        model=f"{RESULTS}/{{experiment}}/model.pt",
        history=f"{RESULTS}/{{experiment}}/history.csv",
        summary=report(
            f"{RESULTS}/{{experiment}}/model_summary.txt",
            caption="../report/model_summary.rst",
            category="{experiment}",
            labels={"experiment": "{experiment}", "figure": "model summary"},
        ),
    log:
        f"{LOGS}/train_model/{{experiment}}.log",
    benchmark:
        f"{BENCHMARKS}/train_model/{{experiment}}.tsv"
    threads: 4
    params:
        settings=get_experiment_settings,
        weights=get_weights_argument,
    shell:
        "python -m fashion_cnn train-model --config-json {params.settings:q} --experiment {wildcards.experiment:q}"
        " --data {input.data:q} --model {output.model:q} --history {output.history:q}"
        " --summary {output.summary:q} {params.weights:q} --threads {threads:q} --log {log:q}"
