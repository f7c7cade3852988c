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


rule summarize_sweep:
    input:
        metrics=get_sweep_metrics,
    output:
        csv=sweep_path("{sweep}", "sweep.csv"),
        markdown=sweep_path("{sweep}", "sweep.md"),
        html=report(
            sweep_path("{sweep}", "sweep.html"),
            caption="../report/sweep_table.rst",
            category="Sweep {sweep}",
            labels={"sweep": "{sweep}", "figure": "table of every point"},
        ),
        plot=report(
            sweep_path("{sweep}", "sweep.png"),
            caption="../report/sweep_plot.rst",
            category="Sweep {sweep}",
            labels={"sweep": "{sweep}", "figure": "test accuracy against each key"},
        ),
    log:
        f"{LOGS}/summarize_sweep/{{sweep}}.log",
    localrule: True
    params:
        definition=get_sweep_definition,
    shell:
        "python -m fashion_cnn summarize-sweep --definition {params.definition:q} --metrics {input.metrics:q}"
        " --csv {output.csv:q} --markdown {output.markdown:q} --html {output.html:q}"
        " --plot {output.plot:q} --log {log:q}"


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
        robustness=report(
            f"{RESULTS}/summary/robustness.png",
            caption="../report/robustness_across.rst",
            category="Summary",
            labels={"table": "accuracy under corruption, every experiment"},
        ),
    log:
        f"{LOGS}/summarize.log",
    localrule: True
    shell:
        "python -m fashion_cnn summarize --metrics {input.metrics:q} --onnx-reports {input.onnx:q}"
        " --csv {output.csv:q} --markdown {output.markdown:q} --html {output.html:q}"
        " --robustness-png {output.robustness:q} --log {log:q}"
