"""fashion-cnn: train, evaluate and export CNNs for Fashion-MNIST.

The Snakemake rules call this package through its command line (``python -m fashion_cnn``);
every step also runs by hand.
"""

__version__ = "0.1.0"

CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
NUM_CLASSES = len(CLASS_NAMES)
# The training set's size; the test set has 10,000 more images.
TRAINING_IMAGES = 60_000
TEST_IMAGES = 10_000
# The environment the command line started in, before it set anything (``__main__``); None when
# the package is used as a library.
USER_ENVIRONMENT: dict[str, str] | None = None
# Why the command line chose this process's OpenMP wait policy (``config.waiting``); None when the
# package is used as a library.
WAIT_POLICY_REASON: str | None = None
# The chapter's augmentation figures (PNG files, results/data/augmentation/NAME.png), in order.
AUGMENTATION_FIGURES = ("flip", "random_flips", "random_rotations", "random_resized_crops")
