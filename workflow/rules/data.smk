# Data: download (login node: it needs the internet) and parse into one cached file.
# Neither needs the image (no torch): both run with the Python that runs Snakemake, whatever
# `container:` says, so switching containers on or off does not redo the data, nor rewrite the
# shared resources/ files that every results folder reads.


rule download_data:
    output:
        expand(
            f"{RAW_FOLDER}/{{filename}}",
            filename=[item.filename for item in RAW_FILES],
        ),
    log:
        f"{LOGS}/download_data.log",
    benchmark:
        f"{BENCHMARKS}/download_data.tsv"
    localrule: True
    container:
        False
    params:
        folder=get_output_folder,
        mirrors=get_mirror_arguments,
        timeout=config["data"]["timeout_s"],
    shell:
        '"$SNAKEMAKE_PYTHON" -m fashion_cnn download-data --folder {params.folder:q} {params.mirrors:q}'
        " --timeout {params.timeout:q} --log {log:q}"


rule prepare_data:
    input:
        rules.download_data.output,
    output:
        DATA,
    log:
        f"{LOGS}/prepare_data.log",
    benchmark:
        f"{BENCHMARKS}/prepare_data.tsv"
    container:
        False
    params:
        folder=get_input_folder,
    shell:
        '"$SNAKEMAKE_PYTHON" -m fashion_cnn prepare-data --raw-folder {params.folder:q} --output {output:q} --log {log:q}'


rule fetch_pretrained_weights:
    output:
        WEIGHTS_STATUS,
    log:
        f"{LOGS}/fetch_pretrained_weights/{{model}}.log",
    wildcard_constraints:
        model="|".join(models_with("pretrained")),
    localrule: True
    params:
        folder=get_output_folder,
        strict=["--strict"] if config["pretrained"]["strict"] else [],
    shell:
        "python -m fashion_cnn fetch-weights --model {wildcards.model:q} --folder {params.folder:q} --status {output:q} {params.strict:q} --log {log:q}"


# A target for the login node: every download the default target needs, and nothing else
# (`snakemake --profile profiles/slurm downloads`, docs/cluster.md step 3).
rule downloads:
    input:
        get_downloads(),
    localrule: True
