"""The XTTS-v2 base model and fine-tuned runs: find, build, load, adapt.

Three modules: :mod:`.base` (the base model), :mod:`.lora` (adapters) and :mod:`.runs` (the run
folder format); this package re-exports their public names.

Every stage that needs XTTS goes through this module:

* :func:`resolve_base_model` turns ``--base-model`` into a folder holding the six
  files of :data:`XTTS_FILES`: ``coqui/XTTS-v2`` is downloaded once from the
  Hugging Face Hub at a pinned revision (size and hash checked), ``tiny`` is a
  small *random* XTTS built once into the cache (tests and the offline demo:
  its output is noise), and any other value must be a folder with those files.
* :func:`load_xtts` loads such a folder into coqui's ``Xtts`` -- the same code
  for the tiny and the real model -- never unpickling arbitrary objects
  (``torch.load(weights_only=True)``).
* :func:`attach_lora` puts PEFT LoRA adapters on the GPT-2 blocks of the GPT.
* :func:`write_checkpoint` / :func:`load_finetuned` define the run folder format
  (``train/checkpoints/<run>/``): adapters as safetensors, ``meta.json`` last.

Heavy libraries (torch, coqui-tts, peft, huggingface_hub) are imported inside
the functions.
"""

from __future__ import annotations

from xttsft.model.base import (
    HF_REPO_ID,
    HF_REVISION,
    TINY_MARKER,
    TINY_NOISE_WARNING,
    TINY_SPEC,
    TINY_VERSION,
    XTTS_FILES,
    _build_tiny_vocab,
    _new_dvae,
    base_identity,
    build_tiny_model,
    cache_dir,
    fuse_gelu,
    is_tiny,
    load_dvae,
    load_xtts,
    model_limits,
    resolve_base_model,
    safe_torch_load,
    validate_base_dir,
    xtts_v2_args,
)
from xttsft.model.lora import (
    attach_lora,
    count_parameters,
    merge_lora,
    merged_gpt_state,
)
from xttsft.model.runs import (
    CheckpointInfo,
    RunInfo,
    apply_checkpoint,
    checkpoint_bytes,
    find_checkpoint,
    list_checkpoints,
    load_finetuned,
    load_gpt_weights,
    read_run_info,
    resolve_run,
    resumable_states,
    tidy_run_dir,
    write_checkpoint,
    write_run_info,
)

__all__ = [
    "XTTS_FILES",
    "HF_REPO_ID",
    "HF_REVISION",
    "TINY_SPEC",
    "TINY_NOISE_WARNING",
    "TINY_MARKER",
    "TINY_VERSION",
    "_build_tiny_vocab",
    "_new_dvae",
    "RunInfo",
    "CheckpointInfo",
    "cache_dir",
    "fuse_gelu",
    "resolve_base_model",
    "validate_base_dir",
    "build_tiny_model",
    "is_tiny",
    "base_identity",
    "load_xtts",
    "model_limits",
    "load_dvae",
    "attach_lora",
    "merge_lora",
    "count_parameters",
    "write_checkpoint",
    "list_checkpoints",
    "find_checkpoint",
    "apply_checkpoint",
    "read_run_info",
    "write_run_info",
    "xtts_v2_args",
    "load_finetuned",
    "safe_torch_load",
    "load_gpt_weights",
    "resolve_run",
    "checkpoint_bytes",
    "resumable_states",
    "tidy_run_dir",
    "merged_gpt_state",
]
