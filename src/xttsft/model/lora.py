"""PEFT LoRA on the GPT-2 blocks of the XTTS GPT: attach, fold in (in place or as a state dict), count."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from xttsft.errors import SettingsError

if TYPE_CHECKING:  # pragma: no cover
    from xttsft.settings import TrainSettings

__all__ = ["attach_lora", "merge_lora", "merged_gpt_state", "count_parameters"]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- LoRA
def _lora_config(settings: TrainSettings):
    from peft import LoraConfig

    return LoraConfig(
        r=settings.lora_rank,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=list(settings.lora_target_modules),
        fan_in_fan_out=True,  # GPT-2 uses transformers' Conv1D (weights stored transposed)
        bias="none",
    )


def attach_lora(gpt, train_settings: TrainSettings):
    """Freeze the GPT and inject PEFT LoRA adapters into its GPT-2 blocks (in place).

    ``gpt`` is coqui's ``xtts.gpt``; adapters go on ``gpt.gpt`` (the HF GPT2Model)
    modules named in ``lora_target_modules``. Returns the peft ``LoraConfig``.
    """
    from peft import inject_adapter_in_model

    cfg = _lora_config(train_settings)
    width = gpt.gpt.config.n_embd
    if cfg.r > width:  # a rank above the width adds parameters and learns nothing more
        raise SettingsError(
            f"TRAIN_LORA_RANK={cfg.r} is larger than the GPT's width ({width}).",
            hint=f"Pick a rank of at most {width}; 8-64 is usual (the guide uses 8).",
        )
    gpt.requires_grad_(False)
    try:
        inject_adapter_in_model(cfg, gpt.gpt)
    except ValueError as exc:
        raise SettingsError(
            f"LoRA target modules {cfg.target_modules} do not match the GPT: {exc}",
            hint="TRAIN_LORA_TARGET_MODULES takes GPT-2 module names: c_attn, c_proj, c_fc.",
        ) from None
    for name, p in gpt.named_parameters():
        p.requires_grad_("lora_" in name)
    return cfg


def merge_lora(gpt) -> None:
    """Fold LoRA adapters into the base weights and remove the LoRA layers (in place)."""
    from peft.tuners.lora import LoraLayer

    targets = [(n, m) for n, m in gpt.gpt.named_modules() if isinstance(m, LoraLayer)]
    for name, module in targets:
        module.merge()
        parent_name, _, attr = name.rpartition(".")
        parent = gpt.gpt.get_submodule(parent_name) if parent_name else gpt.gpt
        setattr(parent, attr, module.get_base_layer())


def count_parameters(module) -> tuple[int, int]:
    """(trainable, total) parameter counts of ``module``."""
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    total = sum(p.numel() for p in module.parameters())
    return trainable, total


def merged_gpt_state(gpt, mode: str) -> dict[str, Any]:
    """The GPT's weights with LoRA deltas folded in, as a new state dict: the training model is left as it
    is (test audio during training). :func:`merge_lora` folds them in place (export, inference)."""
    import torch

    with torch.no_grad():
        sd = {k.replace(".base_layer.", "."): v.detach() for k, v in gpt.state_dict().items() if "lora_" not in k}
        if mode == "lora":
            from peft.tuners.lora import LoraLayer

            for name, m in gpt.gpt.named_modules():
                if isinstance(m, LoraLayer):
                    key = f"gpt.{name}.weight"
                    delta = m.get_delta_weight("default")  # type: ignore[attr-defined]  # on PEFT's Linear, not the base
                    sd[key] = sd[key] + delta.to(sd[key].dtype)
    return sd
