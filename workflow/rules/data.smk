# Data: download (login node: it needs the internet) and parse into one cached file.


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
    params:
        folder=get_output_folder,
        mirrors=get_mirror_arguments,
        timeout=config["data"]["timeout_s"],
    shell:
        "python -m fashion_cnn download-data --folder {params.folder:q} {params.mirrors:q}"
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
    params:
        folder=get_input_folder,
    shell:
        "python -m fashion_cnn prepare-data --raw-folder {params.folder:q} --output {output:q} --log {log:q}"


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
