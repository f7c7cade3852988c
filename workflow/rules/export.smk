# ONNX export, checked against PyTorch with ONNX Runtime on real test images.


rule export_onnx:
    input:
        model=get_representative_file("model.pt"),
        data=DATA,
    output:
        onnx=f"{RESULTS}/{{experiment}}/model.onnx",
        check=report(
            f"{RESULTS}/{{experiment}}/onnx_check.json",
            caption="../report/onnx_check.rst",
            category="{experiment}",
            labels={"experiment": "{experiment}", "figure": "ONNX checks"},
        ),
    log:
        f"{LOGS}/export_onnx/{{experiment}}.log",
    benchmark:
        f"{BENCHMARKS}/export_onnx/{{experiment}}.tsv"
    threads: 2
    resources:  # ONNX Runtime's CUDA provider is checked and timed on the GPU
        gpu=GPU_REQUEST,
        mem_mb=8000,
        runtime=30,
    params:
        settings=get_representative_settings,
        gpu=get_gpu_flag,
    shell:
        "python -m fashion_cnn export-onnx --config-json {params.settings:q} --checkpoint {input.model:q}"
        " --data {input.data:q} --onnx {output.onnx:q} --report {output.check:q}"
        " --threads {threads:q} {params.gpu:q} --log {log:q}"
