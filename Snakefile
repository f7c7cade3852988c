# fashion-cnn: train, evaluate and export CNNs for Fashion-MNIST.
# A table of contents; the work is in workflow/rules/ and the fashion_cnn package.
from snakemake.utils import min_version

# 9.14.1 fixed retries of cluster jobs (the SLURM profile relies on them).
min_version("9.14.1")


configfile: "config.yaml"


include: "workflow/rules/common.smk"


report: "workflow/report/workflow.rst"


container: CONTAINER


wildcard_constraints:
    experiment=RUN_NAMES,
    seed="[0-9]+",
    sweep=SWEEP_NAMES,


include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/plots.smk"
include: "workflow/rules/export.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        get_final_output(),
