"""One trained model judged and delivered: test-set metrics, the ONNX export and its checks, and
the figures (samples, augmentations, filters, curves, confusion matrices).

May import: ``core``, ``config``, ``data``, ``models``, ``training`` (the device and threads).
"""
