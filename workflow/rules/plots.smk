# Figures: the data, the augmentation policy, filters and training curves.


rule plot_samples:
    input:
        DATA,
    output:
        grid=report(
            f"{RESULTS}/data/samples.png",
            caption="../report/samples.rst",
            category="Data",
            labels={"figure": "16 training images"},
        ),
        colorbar=report(
            f"{RESULTS}/data/sample_colorbar.png",
            caption="../report/sample_colorbar.rst",
            category="Data",
            labels={"figure": "one image with its pixel scale"},
        ),
    log:
        f"{LOGS}/plot_samples.log",
    shell:
        "python -m fashion_cnn plot-samples --data {input:q} --grid {output.grid:q} --colorbar {output.colorbar:q}"
        " --log {log:q}"


rule plot_augmentations:
    input:
        DATA,
    output:
        report(
            expand(
                f"{RESULTS}/data/augmentation/{{name}}.png", name=AUGMENTATION_FIGURES
            ),
            caption="../report/augmentation.rst",
            category="Data",
            labels={"figure": "augmentation examples"},
        ),
    log:
        f"{LOGS}/plot_augmentations.log",
    params:
        folder=get_output_folder,
    shell:
        "python -m fashion_cnn plot-augmentations --data {input:q} --output-folder {params.folder:q} --log {log:q}"


rule plot_filters:
    input:
        get_representative_file("model.pt"),
    output:
        chapter=report(
            f"{RESULTS}/{{experiment}}/filters.png",
            caption="../report/filters.rst",
            category="{experiment}",
            labels={
                "experiment": "{experiment}",
                "figure": "filters (chapter figure)",
            },
        ),
        layers=report(
            f"{RESULTS}/{{experiment}}/filters_layers.png",
            caption="../report/filters_layers.rst",
            category="{experiment}",
            labels={"experiment": "{experiment}", "figure": "filters of every layer"},
        ),
    log:
        f"{LOGS}/plot_filters/{{experiment}}.log",
    shell:
        "python -m fashion_cnn plot-filters --checkpoint {input:q} --chapter-figure {output.chapter:q}"
        " --layers-figure {output.layers:q} --log {log:q}"
