"""The configuration: the schema, loading and validating the YAML (one paragraph per mistake), the
typed settings built from it, and the expansion of sweeps into runs.

May import: ``core``. Torch-free: Snakemake imports it on the login node, where the CUDA stack may
live only inside the container.
"""
