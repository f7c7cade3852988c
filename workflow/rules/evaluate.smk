# Evaluation on the 10,000 test images.


rule evaluate_model:
    input:
        model=f"{RESULTS}/{{experiment}}/model.pt",
        data=DATA,
    output:
        metrics=f"{RESULTS}/{{experiment}}/metrics.json",
        confusion_csv=f"{RESULTS}/{{experiment}}/confusion_matrix.csv",
        per_class_csv=f"{RESULTS}/{{experiment}}/per_class_accuracy.csv",
        confusion_png=report(
            f"{RESULTS}/{{experiment}}/confusion_matrix.png",
            caption="../report/confusion_matrix.rst",
            category="{experiment}",
            labels=get_accuracy_labels,
        ),
    log:
        f"{LOGS}/evaluate_model/{{experiment}}.log",
    benchmark:
        f"{BENCHMARKS}/evaluate_model/{{experiment}}.tsv"
    threads: 2
    params:
        device=config["engine"]["device"],
        batch_size=config["engine"]["eval_batch_size"],
    shell:
        "python -m fashion_cnn evaluate-model --checkpoint {input.model:q} --data {input.data:q}"
        " --metrics {output.metrics:q} --confusion-csv {output.confusion_csv:q}"
        " --confusion-png {output.confusion_png:q} --per-class-csv {output.per_class_csv:q}"
        " --device {params.device:q} --batch-size {params.batch_size:q} --threads {threads:q} --log {log:q}"
