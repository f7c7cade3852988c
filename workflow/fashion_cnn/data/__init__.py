"""The data: downloading and checking Fashion-MNIST, the prepared arrays, and augmentation (the
named presets and the batch transforms that apply them).

May import: ``core``, ``config``.
"""
