"""xttsft: fine-tune XTTS-v2 on a voice, from raw audio to a usable model.

The package is a pipeline of stages, one module each, sharing nothing but files
in a workspace (see :mod:`xttsft.paths`):

``fetch`` -> ``segment`` -> ``transcribe`` -> ``build`` -> ``train`` -> ``synth``

``cli`` is a thin Typer layer over these modules; ``settings`` holds the one
typed configuration tree; ``doctor`` inspects the hardware and recommends.
"""

__version__ = "0.1.0"
