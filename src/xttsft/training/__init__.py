"""From a dataset to a fine-tuned XTTS-v2: :mod:`.train` sets a run up, :mod:`.train_data` checks
and batches the clips, and :mod:`.trainer` loops. See docs/train.md.
"""
