"""condgen: conditional generative models whose inputs are fully known labels.

The top-level package is the shared core: label vocabularies and the
conditioning module, recipes, the trainer, checkpoints and the command line.
The audio heads live in `condgen.synth`, the image head in `condgen.vision`.
"""

__version__ = "0.1.0"
