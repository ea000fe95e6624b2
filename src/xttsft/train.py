"""``xttsft train``: fine-tune the XTTS-v2 GPT (LoRA or full) on the build dataset."""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["gpt_loss", "TEXT_CE_WEIGHT", "MEL_CE_WEIGHT"]

log = logging.getLogger(__name__)

#: coqui's recipe: loss = 0.01 x text cross-entropy + 1.0 x mel (audio code) cross-entropy.
TEXT_CE_WEIGHT = 0.01
MEL_CE_WEIGHT = 1.0


def gpt_loss(gpt, batch: dict[str, Any]) -> dict[str, Any]:
    """coqui's GPTTrainer.train_step on a formatted batch: the weighted text + mel CE."""
    cond_idxs = batch.get("cond_idxs")
    loss_text, loss_mel, _ = gpt(
        batch["text_inputs"],
        batch["text_lengths"],
        batch["audio_codes"],
        batch["wav_lengths"],
        cond_mels=batch["cond_mels"],
        # GPT.forward rescales cond_idxs in place: give it a copy
        cond_idxs=None if cond_idxs is None else cond_idxs.clone(),
        cond_lens=batch.get("cond_lens"),
    )
    loss = loss_text * TEXT_CE_WEIGHT + loss_mel * MEL_CE_WEIGHT
    return {"loss": loss, "loss_text_ce": loss_text, "loss_mel_ce": loss_mel}
