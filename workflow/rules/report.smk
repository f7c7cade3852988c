# The summary table of every experiment. The HTML report itself is made by
# `snakemake --report results/report.html` (the README's main command runs it).


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
