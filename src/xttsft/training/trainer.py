"""The training loop, in named parts: the state it carries, one step, an epoch's end, an interrupt.

:class:`Trainer` only loops; each thing it does is a method of its own:

* :meth:`Trainer.train_step`: forward under autocast, the NaN/inf check (agreed across DDP
  ranks), backward scaled for accumulation;
* :meth:`Trainer.optimizer_step`: at the end of an accumulation window: unscale, clip, step,
  schedule (a window with a non-finite loss is dropped but still advances the schedule);
* :meth:`Trainer.end_epoch`: validation, the best model, the epoch checkpoint;
* :meth:`Trainer.on_interrupt`: Ctrl-C (SIGINT) or SIGTERM (a job scheduler, ``timeout``,
  ``docker stop``, systemd) saves the state as of the last optimizer step.

:class:`TrainState` is everything a resume needs besides the weights and the optimizer:
counters, loss sums, best model, history and RNG, with ``to_dict``/``from_dict`` in the
``training_state.pt`` format. Callbacks (:class:`Callback`) draw the console line and write
TensorBoard; the loop does not know how.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import random
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xttsft.errors import XttsftError
from xttsft.model import list_checkpoints
from xttsft.paths import RunPaths
from xttsft.progress import Progress, no_progress

__all__ = [
    "TrainState",
    "Trainer",
    "Callback",
    "ConsoleCallback",
    "TensorBoardCallback",
    "TrainingError",
    "TrainHooks",
    "Terminated",
    "rng_state",
    "set_rng_state",
]

log = logging.getLogger(__name__)


class TrainingError(XttsftError):
    """Training cannot go on (NaN losses, out of memory)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM during training: handled as Ctrl-C is (the state is saved), and said as what it is."""


@dataclass
class TrainHooks:
    """Callables run inside the loop (tests use them to interrupt or corrupt a step)."""

    after_batch: Callable[[int, int, int], None] | None = None  # (epoch, batch index, global step)
    loss_filter: Callable[[Any, int], Any] | None = None  # (loss, global step) -> loss
    force_test_audio: bool = False  # synthesize test sentences even with the tiny model


def rng_state() -> dict[str, Any]:
    import torch

    st: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(st["torch"])
    if "python" in st:
        py = st["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in st and torch.cuda.is_available():
        with contextlib.suppress(Exception):
            torch.cuda.set_rng_state_all(st["cuda"])


@dataclass
class TrainState:
    """Where training stands (what resume restores besides weights, optimizer and schedule)."""

    epoch: int = 0  # epochs completed
    batch_in_epoch: int = 0  # batches of the current epoch done and applied
    global_step: int = 0  # batches trained, all epochs
    optimizer_step: int = 0
    run_loss: float = 0.0  # sum of the finite batch losses of the current epoch
    run_n: int = 0
    best_val_loss: float | None = None
    best_epoch: int | None = None
    history_train: list[float] = field(default_factory=list)
    history_val: list[float] = field(default_factory=list)
    rng: dict[str, Any] = field(default_factory=dict)

    def copy(self) -> TrainState:
        return dataclasses.replace(self, history_train=list(self.history_train), history_val=list(self.history_val))

    def to_dict(self, opt: Any, sched: Any, scaler: Any) -> dict[str, Any]:
        """The ``training_state.pt`` payload (tensors and plain types: loads with weights_only)."""
        mid = self.batch_in_epoch > 0
        return {
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "global_step": self.global_step,
            "optimizer_step": self.optimizer_step,
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else {},
            "rng": self.rng or rng_state(),
            "best_val_loss": self.best_val_loss,
            "best_epoch": self.best_epoch,
            "history_train": list(self.history_train),
            "history_val": list(self.history_val),
            "epoch_loss_sum": self.run_loss if mid else 0.0,
            "epoch_loss_n": self.run_n if mid else 0,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainState:
        return cls(
            epoch=int(d["epoch"]),
            batch_in_epoch=int(d.get("batch_in_epoch", 0)),
            global_step=int(d["global_step"]),
            optimizer_step=int(d["optimizer_step"]),
            run_loss=float(d.get("epoch_loss_sum", 0.0)),
            run_n=int(d.get("epoch_loss_n", 0)),
            best_val_loss=d.get("best_val_loss"),
            best_epoch=d.get("best_epoch"),
            history_train=list(d.get("history_train", [])),
            history_val=list(d.get("history_val", [])),
            rng=d.get("rng") or {},
        )


class Callback:
    """What the loop tells the outside world; every method is optional."""

    def on_batch(self, trainer: Trainer, loss: float, avg: float, lr: float, batches: int) -> None: ...
    def on_optimizer_step(self, trainer: Trainer, grad_norm: float) -> None: ...
    def on_epoch_end(self, trainer: Trainer, train_loss: float, val_loss: float) -> None: ...
    def close(self) -> None: ...


class ConsoleCallback(Callback):
    """The loss line every ``print_step`` batches (and the first of a session's epoch)."""

    def __init__(self, print_step: int, num_epochs: int) -> None:
        self.print_step, self.num_epochs = print_step, num_epochs

    def on_batch(self, trainer: Trainer, loss: float, avg: float, lr: float, batches: int) -> None:
        bi = trainer.batch_index
        if (bi + 1) % self.print_step == 0 or bi == trainer.epoch_start:
            log.info(
                "Epoch %d/%d | Step %d/%d | Loss: %.4f | Avg: %.4f | LR: %.2e",
                trainer.state.epoch + 1,
                self.num_epochs,
                bi + 1,
                batches,
                loss,
                avg,
                lr,
            )


class TensorBoardCallback(Callback):
    """Scalars per batch, per optimizer step and per epoch; test sentences at each epoch's end."""

    def __init__(self, log_dir: Path, test_audio: Callable[[Any, Any, int], Any] | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir))
        self.test_audio = test_audio

    def on_batch(self, trainer: Trainer, loss: float, avg: float, lr: float, batches: int) -> None:
        step = trainer.state.global_step
        self.writer.add_scalar("train/loss", loss, step)
        self.writer.add_scalar("train/avg_loss", avg, step)
        self.writer.add_scalar("train/lr", lr, step)

    def on_optimizer_step(self, trainer: Trainer, grad_norm: float) -> None:
        self.writer.add_scalar("train/grad_norm", grad_norm, trainer.state.global_step)

    def on_epoch_end(self, trainer: Trainer, train_loss: float, val_loss: float) -> None:
        done = trainer.state.epoch + 1
        self.writer.add_scalar("epoch/train_loss", train_loss, done)
        self.writer.add_scalar("epoch/val_loss", val_loss, done)
        if self.test_audio is not None:
            self.test_audio(trainer.gpt, self.writer, done)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class Trainer:
    """Runs epochs over prepared parts; see the module docstring."""

    def __init__(
        self,
        *,
        gpt: Any,
        model: Any,
        featurize: Callable[[dict[str, Any]], dict[str, Any]],
        loss_fn: Callable[[Any, dict[str, Any]], dict[str, Any]],
        optimizer: Any,
        scheduler: Any,
        scaler: Any,
        batches_of: Callable[[int], list[list[int]]],
        loader_of: Callable[[int, list[list[int]]], Any],
        validate: Callable[[], float],
        save_checkpoint: Callable[[str, TrainState, dict[str, Any] | None], Path],
        save_best: Callable[[TrainState, float, float], None],
        num_epochs: int,
        grad_accum_steps: int,
        max_grad_norm: float,
        max_nan_steps: int,
        save_every_n_epochs: int,
        amp_dtype: Any,
        state_every_minutes: float = 0.0,
        state_every_steps: int = 0,
        device_type: str,
        main: bool = True,
        distributed: bool = False,
        callbacks: list[Callback] | None = None,
        hooks: TrainHooks | None = None,
        progress: Progress = no_progress,
        run_name: str = "",
        patience: int = 0,
    ) -> None:
        self.gpt, self.model, self.featurize, self.loss_fn = gpt, model, featurize, loss_fn
        self.opt, self.sched, self.scaler = optimizer, scheduler, scaler
        self.batches_of, self.loader_of, self.validate = batches_of, loader_of, validate
        self.save_checkpoint, self.save_best = save_checkpoint, save_best
        self.num_epochs, self.accum, self.max_grad_norm = num_epochs, grad_accum_steps, max_grad_norm
        self.max_nan_steps, self.save_every = max_nan_steps, save_every_n_epochs
        self.state_every_s, self.state_every_steps = state_every_minutes * 60, state_every_steps
        self._state_saved_at, self._state_saved_step = time.monotonic(), 0
        self.amp_dtype, self.device_type = amp_dtype, device_type
        self.main, self.distributed = main, distributed
        self.callbacks = callbacks or []
        self.hooks = hooks or TrainHooks()
        self.progress = progress
        self.run_name = run_name
        self.patience = patience  # epochs without a better val loss before stopping; 0: never
        self.state = TrainState()
        self.applied = TrainState()  # the state as of the last optimizer step (what an interrupt saves)
        self.step_losses: list[float] = []
        self.nan_streak = 0
        self.nan_skipped = 0
        self.epoch_start = 0  # the first batch of this session's current epoch
        self.batch_index = 0
        self._window_bad = False

    # ------------------------------------------------------------------ the loop
    def fit(self, state: TrainState) -> str:
        """Train from ``state`` to ``num_epochs``: "finished", "interrupted" or "already finished"."""
        self.state = state
        self._state_saved_at, self._state_saved_step = time.monotonic(), state.optimizer_step
        state.rng = {}  # the live state's RNG is read when it is saved; the caller restored the saved one
        self.applied = self._snapshot()
        try:
            if state.epoch >= self.num_epochs:
                return "already finished"
            with _sigterm_as_interrupt():
                for epoch in range(state.epoch, self.num_epochs):
                    if self.stale_epochs() >= self.patience > 0:
                        return self.stop_early()
                    self.train_epoch(epoch)
                    self.end_epoch()
        except KeyboardInterrupt as stop:
            terminated = isinstance(stop, Terminated)
            self.on_interrupt(terminated)
            return "terminated" if terminated else "interrupted"
        finally:
            for cb in self.callbacks:
                cb.close()
        return "finished"

    def train_epoch(self, epoch: int) -> None:
        """The batches of one epoch (from the state's position in it); no validation."""
        st = self.state
        st.epoch = epoch
        start = st.batch_in_epoch  # > 0 only when resuming inside this epoch
        if not start:
            st.run_loss, st.run_n = 0.0, 0
        batches = self.batches_of(epoch)
        self.epoch_start = start
        self.model.train()
        self.progress(total=len(batches), completed=start, description=f"Epoch {epoch + 1}/{self.num_epochs}")
        self.opt.zero_grad(set_to_none=True)
        self._window_bad = False
        self.applied = self._snapshot()
        for bi, batch in enumerate(self.loader_of(epoch, batches[start:]), start):
            self.batch_index = bi
            loss = self.train_step(batch)
            if (bi + 1) % self.accum == 0 or bi + 1 == len(batches):
                self.optimizer_step(bi + 1)
                self._maybe_save_state()
            avg = st.run_loss / st.run_n if st.run_n else float("nan")
            for cb in self.callbacks:
                cb.on_batch(self, loss, avg, self.opt.param_groups[0]["lr"], len(batches))
            self.progress(advance=1)
            if self.hooks.after_batch is not None:
                self.hooks.after_batch(epoch, bi, st.global_step)

    def train_step(self, batch: dict[str, Any]) -> float:
        """Forward and backward of one batch; a non-finite loss is skipped (and counted)."""
        import torch

        st = self.state
        fb = self.featurize(batch)
        with torch.autocast(self.device_type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            loss = self.loss_fn(self.model, fb)["loss"]
        if self.hooks.loss_filter is not None:
            loss = self.hooks.loss_filter(loss, st.global_step)
        finite = torch.isfinite(loss.detach()).float()
        if self.distributed:
            import torch.distributed as dist

            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        value = float(loss.detach())
        self.step_losses.append(value)
        st.global_step += 1
        if finite.item() < 1:
            self._skip_non_finite(value)
        else:
            self.nan_streak = 0
            self.scaler.scale(loss / self.accum).backward()
            st.run_loss += value
            st.run_n += 1
        return value

    def _skip_non_finite(self, value: float) -> None:
        self.nan_streak += 1
        self.nan_skipped += 1
        self._window_bad = True
        e, b = self.state.epoch + 1, self.batch_index + 1
        log.warning(
            "Non-finite loss (%s) at epoch %d step %d: update skipped (%d in a row)", value, e, b, self.nan_streak
        )
        if self.nan_streak >= self.max_nan_steps:
            raise TrainingError(
                f"Stopped: {self.nan_streak} non-finite losses in a row (epoch {e}, step {b}). "
                "Checkpoints saved before this point are intact.",
                hint="Lower TRAIN_LEARNING_RATE, keep TRAIN_MAX_GRAD_NORM on, try TRAIN_USE_AMP=false "
                "(fp16 overflows), check the dataset for silent or broken clips; then --resume.",
            )

    def optimizer_step(self, batches_done: int) -> None:
        """End of an accumulation window: apply it (or drop it after a non-finite loss)."""
        st = self.state
        with _ctrl_c_deferred():  # the weights, the optimizer and the snapshot change together, or not at all
            grad_norm = self._apply_window(st, batches_done)
        if grad_norm is not None:
            for cb in self.callbacks:
                cb.on_optimizer_step(self, float(grad_norm))

    def _apply_window(self, st: TrainState, batches_done: int) -> Any:
        import torch

        grad_norm = None
        if self._window_bad:
            self.opt.zero_grad(set_to_none=True)
        else:
            self.scaler.unscale_(self.opt)
            params = [p for p in self.gpt.parameters() if p.requires_grad]
            grad_norm = torch.nn.utils.clip_grad_norm_(
                params, self.max_grad_norm if self.max_grad_norm > 0 else float("inf")
            )
            self.scaler.step(self.opt)
            self.scaler.update()
            self.opt.zero_grad(set_to_none=True)
            st.optimizer_step += 1
        with warnings.catch_warnings():  # a skipped update still advances the schedule
            warnings.simplefilter("ignore", UserWarning)
            self.sched.step()
        self._window_bad = False
        st.batch_in_epoch = batches_done
        self.applied = self._snapshot()
        return grad_norm

    def _maybe_save_state(self) -> None:
        """``resume_state`` every N minutes or optimizer steps, so a kill never loses more than that."""
        st = self.state
        due_time = self.state_every_s > 0 and time.monotonic() - self._state_saved_at >= self.state_every_s
        due_steps = self.state_every_steps > 0 and st.optimizer_step - self._state_saved_step >= self.state_every_steps
        if not self.main or not (due_time or due_steps):
            return
        self.save_checkpoint(RunPaths.RESUME_STATE, self.applied, None)  # atomic: a kill keeps the previous one
        self._state_saved_at, self._state_saved_step = time.monotonic(), st.optimizer_step

    def end_epoch(self) -> None:
        """Validation, the best model and the epoch checkpoint."""
        st = self.state
        train_loss = st.run_loss / st.run_n if st.run_n else float("nan")
        val_loss = self.validate()
        st.history_train.append(train_loss)
        st.history_val.append(val_loss)
        done = st.epoch + 1
        log.info("Epoch %d/%d done | train loss %.4f | val loss %.4f", done, self.num_epochs, train_loss, val_loss)
        for cb in self.callbacks:
            cb.on_epoch_end(self, train_loss, val_loss)
        st.epoch, st.batch_in_epoch, st.run_loss, st.run_n = done, 0, 0.0, 0
        # every rank tracks the best (each validates the whole val split, so all see the same loss): early
        # stopping then stops them all at the same epoch; only rank 0 writes
        if math.isfinite(val_loss) and (st.best_val_loss is None or val_loss < st.best_val_loss):
            st.best_val_loss, st.best_epoch = val_loss, done
            if self.main:
                self.save_best(st, train_loss, val_loss)
        if self.main and (done % self.save_every == 0 or done == self.num_epochs):
            self.save_checkpoint(RunPaths.checkpoint_name(done), st, None)
        self.applied = self._snapshot()
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def stale_epochs(self) -> int:
        """Epochs since the best validation loss (0 before any finite one: nothing to compare yet)."""
        st = self.state
        return 0 if st.best_epoch is None else st.epoch - st.best_epoch

    def stop_early(self) -> str:
        """Validation loss has not improved for ``patience`` epochs: keep the last epoch resumable and stop."""
        st = self.state
        log.info(
            "Early stopping after epoch %d: the validation loss has not improved for %d epochs (best %.4f at "
            "epoch %d, kept as best_model). TRAIN_EARLY_STOPPING_PATIENCE=0 trains all %d epochs.",
            st.epoch,
            self.stale_epochs(),
            st.best_val_loss,
            st.best_epoch,
            self.num_epochs,
        )
        if self.main and st.epoch % self.save_every != 0:  # the end-of-epoch save did not write this one
            self.save_checkpoint(RunPaths.checkpoint_name(st.epoch), st, None)
        return "stopped early"

    def on_interrupt(self, terminated: bool = False) -> None:
        """Ctrl-C or SIGTERM: save the state as of the last optimizer step, or say why it could not be saved.
        A second SIGTERM while it is written is ignored (the save is short; a scheduler's SIGKILL follows)."""
        if not self.main:
            return
        at = self.applied
        what = "Terminated (SIGTERM)" if terminated else "Interrupted"
        log.warning("%s: saving a checkpoint (epoch %d, step %d)...", what, at.epoch + 1, at.batch_in_epoch)
        name = RunPaths.checkpoint_name(at.epoch, at.global_step if at.batch_in_epoch else None)
        try:
            with _signals_ignored(("SIGTERM",)):
                saved = self.save_checkpoint(name, at, None)
        except KeyboardInterrupt:  # a second Ctrl-C: stop now, without this checkpoint
            log.warning(
                "Second Ctrl-C: stopped without saving; --resume continues from the last saved state "
                "(or starts the run again if it has none)."
            )
        except Exception as exc:  # noqa: BLE001 - report it; the interrupt still ends the run
            log.error(
                "Could not save the interrupt checkpoint (%s: %s); --resume continues from the last saved "
                "state (or starts the run again if it has none).",
                type(exc).__name__,
                exc,
            )
        else:
            log.warning(
                "Saved %s; continue with --resume%s", saved, f" --run-name {self.run_name}" if self.run_name else ""
            )

    def _snapshot(self) -> TrainState:
        snap = self.state.copy()
        snap.rng = rng_state()
        return snap


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Any:
    """SIGTERM raises :class:`Terminated` (a KeyboardInterrupt): the loop saves as on Ctrl-C. Outside
    this block (loading, the final save) SIGTERM keeps its default: the process ends."""
    import signal

    if not _main_thread():
        yield
        return

    def terminate(sig: int, frame: Any) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _signals_ignored(names: tuple[str, ...]) -> Any:
    import signal

    if not _main_thread():
        yield
        return
    previous = {n: signal.signal(getattr(signal, n), signal.SIG_IGN) for n in names}
    try:
        yield
    finally:
        for n, handler in previous.items():
            signal.signal(getattr(signal, n), handler)


@contextlib.contextmanager
def _ctrl_c_deferred() -> Any:
    """Hold a Ctrl-C (SIGINT) or SIGTERM until the block is done, then raise it: an interrupt never
    lands between an optimizer step and the snapshot that records it (resume would apply it twice)."""
    import signal

    if not _main_thread():
        yield
        return
    pending: list[int] = []
    previous = {sig: signal.signal(sig, lambda s, frame: pending.append(s)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if signal.SIGTERM in pending:
        raise Terminated
    if pending:
        raise KeyboardInterrupt


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` epoch checkpoints."""

    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old.path, ignore_errors=True)
