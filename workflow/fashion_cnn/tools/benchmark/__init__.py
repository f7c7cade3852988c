"""Benchmark: training images/s of the chapter's loop vs the engine, and ONNX Runtime vs eager.

(a) the chapter's loop, as the chapter writes it: a DataLoader over a dataset that turns one PIL
    image at a time into a tensor (plus the augmentation transforms), batch 64, a plain step loop;
(b) the project's engine: the dataset as one uint8 tensor on the device, whole batches converted
    and augmented there, the engine's own ``train_step``, with each engine switch measured.

Both train the same model with the same optimizer on the same real images; only the data path and
the engine switches differ. Results go to JSON and a Markdown table (see docs/benchmarks.md).

``arguments`` is the command line's part (torch-free: the command line imports it to build its
parser), ``measure`` times the workloads, ``report`` runs them and writes the JSON and table.
"""
