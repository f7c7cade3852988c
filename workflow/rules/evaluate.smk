# Evaluation on the 10,000 test images, per seed; then the experiment over its seeds.


rule evaluate_model:
    input:
        model=seed_path("model.pt"),
        data=DATA,
    output:
        metrics=seed_path("metrics.json"),
        confusion_csv=seed_path("confusion_matrix.csv"),
        per_class_csv=seed_path("per_class_accuracy.csv"),
        confusion_png=seed_path("confusion_matrix.png"),
    log:
        f"{LOGS}/evaluate_model/{{experiment}}/seed-{{seed}}.log",
    benchmark:
        f"{BENCHMARKS}/evaluate_model/{{experiment}}/seed-{{seed}}.tsv"
    threads: 2
    resources:
        mem_mb=8000,
    params:
        device=config["engine"]["device"],
        batch_size=config["engine"]["eval_batch_size"],
    shell:
        "python -m fashion_cnn evaluate-model --checkpoint {input.model:q} --data {input.data:q}"
        " --metrics {output.metrics:q} --confusion-csv {output.confusion_csv:q}"
        " --confusion-png {output.confusion_png:q} --per-class-csv {output.per_class_csv:q}"
        " --device {params.device:q} --batch-size {params.batch_size:q} --threads {threads:q} --log {log:q}"


rule aggregate_seeds:
    input:
        metrics=get_seed_files("metrics.json"),
        histories=get_seed_files("history.csv"),
        confusion_csv=get_representative_file("confusion_matrix.csv"),
        model_summary=get_representative_file("model_summary.txt"),
    output:
        metrics=experiment_path("{experiment}", "metrics.json"),
        per_seed=experiment_path("{experiment}", "per_seed.csv"),
        confusion_png=report(
            experiment_path("{experiment}", "confusion_matrix.png"),
            caption="../report/confusion_matrix.rst",
            category="{experiment}",
            labels=get_accuracy_labels,
        ),
        curves=report(
            experiment_path("{experiment}", "training_curves.png"),
            caption="../report/training_curves.rst",
            category="{experiment}",
            labels={"experiment": "{experiment}", "figure": "training curves"},
        ),
        model_summary=report(
            experiment_path("{experiment}", "model_summary.txt"),
            caption="../report/model_summary.rst",
            category="{experiment}",
            labels={"experiment": "{experiment}", "figure": "model summary"},
        ),
    log:
        f"{LOGS}/aggregate_seeds/{{experiment}}.log",
    localrule: True
    shell:
        "python -m fashion_cnn aggregate-seeds --metrics {input.metrics:q} --histories {input.histories:q}"
        " --representative-confusion-csv {input.confusion_csv:q}"
        " --representative-model-summary {input.model_summary:q}"
        " --output-metrics {output.metrics:q} --output-per-seed {output.per_seed:q}"
        " --output-curves {output.curves:q} --output-confusion-png {output.confusion_png:q}"
        " --output-model-summary {output.model_summary:q} --log {log:q}"
