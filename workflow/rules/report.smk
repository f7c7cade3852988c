# The summary table of every experiment. The HTML report itself is made by
# `snakemake --report results/report.html` (the README's main command runs it).


rule compare_experiments:
    input:
        metrics=get_compared_metrics,
    output:
        csv=f"{RESULTS}/comparisons/comparisons.csv",
        markdown=f"{RESULTS}/comparisons/comparisons.md",
        html=report(
            f"{RESULTS}/comparisons/comparisons.html",
            caption="../report/comparisons.rst",
            category="Comparisons",
            labels={"table": "differences between experiments, over seeds"},
        ),
    log:
        f"{LOGS}/compare_experiments.log",
    localrule: True
    params:
        pairs=get_comparison_arguments,
    shell:
        "python -m fashion_cnn compare-experiments --metrics {input.metrics:q} {params.pairs:q}"
        " --csv {output.csv:q} --markdown {output.markdown:q} --html {output.html:q} --log {log:q}"


rule summarize:
    input:
        metrics=get_all_metrics,
        onnx=get_all_onnx_checks,
    output:
        csv=f"{RESULTS}/summary/summary.csv",
        markdown=f"{RESULTS}/summary/summary.md",
        html=report(
            f"{RESULTS}/summary/summary.html",
            caption="../report/summary.rst",
            category="Summary",
            labels={"table": "test accuracy of every experiment"},
        ),
    log:
        f"{LOGS}/summarize.log",
    localrule: True
    shell:
        "python -m fashion_cnn summarize --metrics {input.metrics:q} --onnx-reports {input.onnx:q}"
        " --csv {output.csv:q} --markdown {output.markdown:q} --html {output.html:q} --log {log:q}"
