# Evaluation on the 10,000 test images, per seed: accuracy, the classification report,
# calibration, and accuracy under corruption; then the experiment over its seeds, and its
# figures beyond accuracy (docs/assessment.md).


rule evaluate_model:
    input:
        model=seed_path("model.pt"),
        data=DATA,
    output:
        metrics=seed_path("metrics.json"),
        confusion_csv=seed_path("confusion_matrix.csv"),
        per_class_csv=seed_path("per_class_accuracy.csv"),
        confusion_png=seed_path("confusion_matrix.png"),
        scores=seed_path("test_scores.npz"),
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
        bins=config["assessment"]["calibration_bins"],
        temperature_images=config["assessment"]["temperature_images"],
    shell:
        "python -m fashion_cnn evaluate-model --checkpoint {input.model:q} --data {input.data:q}"
        " --metrics {output.metrics:q} --confusion-csv {output.confusion_csv:q}"
        " --confusion-png {output.confusion_png:q} --per-class-csv {output.per_class_csv:q}"
        " --scores {output.scores:q} --calibration-bins {params.bins:q}"
        " --temperature-images {params.temperature_images:q}"
        " --device {params.device:q} --batch-size {params.batch_size:q} --threads {threads:q} --log {log:q}"


rule assess_robustness:
    input:
        model=seed_path("model.pt"),
        data=DATA,
    output:
        seed_path("robustness.csv"),
    log:
        f"{LOGS}/assess_robustness/{{experiment}}/seed-{{seed}}.log",
    benchmark:
        f"{BENCHMARKS}/assess_robustness/{{experiment}}/seed-{{seed}}.tsv"
    threads: 2
    resources:
        mem_mb=8000,
    params:
        device=config["engine"]["device"],
        batch_size=config["engine"]["eval_batch_size"],
        images=config["assessment"]["corruption_images"],
    shell:
        "python -m fashion_cnn assess-robustness --checkpoint {input.model:q} --data {input.data:q}"
        " --output {output:q} --corruption-images {params.images:q} --device {params.device:q}"
        " --batch-size {params.batch_size:q} --threads {threads:q} --log {log:q}"


rule aggregate_seeds:
    input:
        metrics=get_seed_files("metrics.json"),
        histories=get_seed_files("history.csv"),
        robustness=get_seed_files("robustness.csv"),
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
        " --robustness {input.robustness:q}"
        " --representative-confusion-csv {input.confusion_csv:q}"
        " --representative-model-summary {input.model_summary:q}"
        " --output-metrics {output.metrics:q} --output-per-seed {output.per_seed:q}"
        " --output-curves {output.curves:q} --output-confusion-png {output.confusion_png:q}"
        " --output-model-summary {output.model_summary:q} --log {log:q}"


rule assess_experiment:
    input:
        metrics=experiment_path("{experiment}", "metrics.json"),
        scores=get_representative_file("test_scores.npz"),
        data=DATA,
    output:
        classification_csv=report(
            experiment_path("{experiment}", "classification_report.csv"),
            caption="../report/classification_report.rst",
            category="{experiment}",
            labels={"experiment": "{experiment}", "figure": "classification report"},
        ),
        robustness_csv=experiment_path("{experiment}", "robustness.csv"),
        robustness_png=report(
            experiment_path("{experiment}", "robustness.png"),
            caption="../report/robustness.rst",
            category="{experiment}",
            labels={
                "experiment": "{experiment}",
                "figure": "accuracy under corruption",
            },
        ),
        reliability_png=report(
            experiment_path("{experiment}", "reliability.png"),
            caption="../report/reliability.rst",
            category="{experiment}",
            labels={"experiment": "{experiment}", "figure": "reliability diagram"},
        ),
        pairs_csv=experiment_path("{experiment}", "confused_pairs.csv"),
        failures_png=report(
            experiment_path("{experiment}", "failures.png"),
            caption="../report/failures.rst",
            category="{experiment}",
            labels={"experiment": "{experiment}", "figure": "most confident mistakes"},
        ),
    log:
        f"{LOGS}/assess_experiment/{{experiment}}.log",
    localrule: True
    params:
        pairs=config["assessment"]["gallery_pairs"],
        images=config["assessment"]["gallery_images"],
    shell:
        "python -m fashion_cnn assess-experiment --metrics {input.metrics:q} --scores {input.scores:q}"
        " --data {input.data:q} --classification-csv {output.classification_csv:q}"
        " --robustness-csv {output.robustness_csv:q} --robustness-png {output.robustness_png:q}"
        " --reliability-png {output.reliability_png:q} --pairs-csv {output.pairs_csv:q}"
        " --failures-png {output.failures_png:q} --gallery-pairs {params.pairs:q}"
        " --gallery-images {params.images:q} --log {log:q}"
