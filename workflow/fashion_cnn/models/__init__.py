"""The models: the registry of architectures and the networks themselves, their initial weights
(ImageNet, files, Google's ViT checkpoint), self-describing checkpoints, and running a model over
images (inference with test-time views).

May import: ``core``, ``config``, ``data``.
"""
