"""From recordings to a dataset: fetch, segment, screen, transcribe, build, review.

Each module is one stage of ``xttsft run-all`` up to the dataset, and :mod:`.datasets` reads a
dataset in any layout (ours or one made elsewhere). See docs/architecture.md.
"""
