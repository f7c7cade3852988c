"""The foundation every stage stands on: the one user-error type, atomic file writes, the registry
that every choice (model, augmentation preset, optimizer, schedule) is an entry of, the words shown
beside figures, provenance (git commit, library versions, CPU) and the log's attempt headers.

May import: nothing of fashion_cnn but the package root (its version and class names). Torch-free.
"""
