"""The training loop: one epoch after another, resumable to the step, budgeted in minutes.

Reads top to bottom: ``Trainer.fit`` -> ``_run_epoch`` -> ``_step``. Everything random comes from
seeds (the model's initialisation from ``seed``, each epoch's data and order from
``epoch_seed(seed, epoch)``), so the same seed gives the same numbers and a resumed run ends with
the weights of an uninterrupted one. Ready for ``torchrun``: each rank takes its share of every
batch order, gradients are averaged by DDP, only rank 0 writes files.
"""

from __future__ import annotations

import json
import math
import platform
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import __version__
from ..errors import NonFiniteError, TorchSTNError
from ..models import count_params, create_model
from ..module import SpatialTransformer
from ..optim import param_groups
from .checkpoint import atomic_write_text, load_checkpoint, save_checkpoint
from .config import Config, config_from_dict, config_to_dict
from .datamodule import DataModule, Split

__all__ = [
    "Trainer",
    "TrainingDiverged",
    "TrainingInterrupted",
    "build_model",
    "evaluate",
    "resolve_device",
]


class TrainingDiverged(TorchSTNError):
    """The loss became NaN or Inf; the last good checkpoint is kept."""


class TrainingInterrupted(TorchSTNError):
    """Ctrl-C (SIGINT) stopped the run between two steps; a checkpoint was saved."""


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TorchSTNError(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


def build_model(cfg: Config, in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The model of a config, initialised from ``cfg.seed``."""
    torch.manual_seed(cfg.seed)
    return create_model(cfg.model.name, in_shape, num_classes, **cfg.model.options)


@torch.no_grad()
def evaluate(
    model: nn.Module, split: Split, batch_size: int, device: torch.device
) -> dict[str, float]:
    """Mean cross-entropy and error rate (%) of ``model`` on ``split``."""
    was_training = model.training
    model.eval()
    loss_sum, wrong = 0.0, 0
    n = split.y.shape[0]
    for i in range(0, n, batch_size):
        x = split.x[i : i + batch_size].to(device, non_blocking=True)
        y = split.y[i : i + batch_size].to(device, non_blocking=True)
        logits = model(x)
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        wrong += int((logits.argmax(1) != y).sum())
    model.train(was_training)
    return {"loss": loss_sum / n, "error": 100.0 * wrong / n}


def _lr_factor(cfg: Config, epoch: float, elapsed: float = 0.0) -> float:
    """Learning-rate factor at (fractional) ``epoch`` after ``elapsed`` seconds of training.

    ``step`` decays by ``gamma`` every ``step_epochs``. ``cosine`` anneals from 1 to 0 over the
    run: its progress is the fraction of ``run.epochs`` done or, when ``run.minutes`` is set, of
    the time budget spent, whichever is further, so a run cut by its budget still ends annealed.
    """
    o = cfg.optim
    if o.schedule == "step":
        return float(o.gamma ** (int(epoch) // o.step_epochs))
    if o.schedule == "cosine":
        progress = epoch / cfg.run.epochs
        if cfg.run.minutes is not None:
            progress = max(progress, elapsed / (cfg.run.minutes * 60))
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return 1.0


def _penalty(model: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """Identity penalty of every transformer with a positive ``penalty_weight`` (re-localises ``x``
    only for those, which is cheap next to the classifier)."""
    terms = [
        m.penalty(m.localize(x))
        for m in model.modules()
        if isinstance(m, SpatialTransformer)
        and m.penalty_weight > 0
        and m.in_shape == tuple(x.shape[1:])
    ]
    return torch.stack(terms).sum() if terms else None


class Trainer:
    """Train ``cfg`` into ``run_dir`` (``metrics.jsonl``, ``checkpoint.pt``, ``result.json``).

    Args:
        cfg: the resolved configuration.
        run_dir: output folder (created).
        resume: continue from ``run_dir/checkpoint.pt`` (its saved config is used).
        progress: show a progress bar per epoch (tqdm, when installed).
    """

    def __init__(
        self, cfg: Config, run_dir: str | Path, resume: bool = False, progress: bool = True
    ) -> None:
        self.run_dir = Path(run_dir)
        self.ckpt_path = self.run_dir / "checkpoint.pt"
        self.state: dict[str, Any] | None = None
        if resume:
            self.state = load_checkpoint(self.ckpt_path)
            saved = config_from_dict(self.state["config"])
            # a resumed run keeps its config; only the budget may be changed from the command line
            saved.run.epochs, saved.run.minutes = cfg.run.epochs, cfg.run.minutes
            saved.device = cfg.device
            cfg = saved
        self.cfg = cfg
        self.progress = progress
        self.rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        self.world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
        if cfg.run.num_threads:
            torch.set_num_threads(int(cfg.run.num_threads))
        self.device = resolve_device(cfg.device)
        self.data = DataModule(cfg.data, cfg.seed)
        self.model = build_model(cfg, self.data.in_shape, self.data.num_classes).to(self.device)
        self.params = count_params(self.model)
        groups = param_groups(
            self.model, cfg.optim.lr, cfg.optim.loc_lr_scale, weight_decay=cfg.optim.weight_decay
        )
        for g in groups:
            g["base_lr"] = g["lr"]
        if cfg.optim.name == "sgd":
            self.opt: torch.optim.Optimizer = torch.optim.SGD(
                groups, lr=cfg.optim.lr, momentum=cfg.optim.momentum
            )
        else:
            self.opt = torch.optim.Adam(groups, lr=cfg.optim.lr)
        self.net: nn.Module = self.model
        if self.world > 1:
            self.net = nn.parallel.DistributedDataParallel(self.model)
        # progress of the run
        self.epoch, self.step, self.elapsed = 0, 0, 0.0
        self.epoch_stats = {"loss_sum": 0.0, "wrong": 0, "seen": 0}
        self.best: dict[str, Any] = {"val_error": None, "epoch": None, "model": None}
        self.history: list[dict[str, Any]] = []
        self.interrupted = False  # set by SIGINT; checked between steps
        if self.state is not None:
            self._restore(self.state)

    # ------------------------------------------------------------------ state
    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.epoch, self.step, self.elapsed = (
            int(state["epoch"]),
            int(state["step"]),
            float(state["elapsed"]),
        )
        self.epoch_stats = dict(state["epoch_stats"])
        self.best = dict(state["best"])
        self.history = list(state["history"])

    def _snapshot(self) -> dict[str, Any]:
        return {
            "config": config_to_dict(self.cfg),
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "elapsed": self.elapsed,
            "epoch_stats": dict(self.epoch_stats),
            "best": dict(self.best),
            "history": list(self.history),
            "data_info": {
                "in_shape": list(self.data.in_shape),
                "num_classes": self.data.num_classes,
                "class_names": self.data.class_names,
                "name": self.data.name,
            },
            "torchstn_version": __version__,
        }

    def save(self) -> None:
        if self.rank == 0:
            save_checkpoint(self.ckpt_path, self._snapshot())

    def _log(self, record: dict[str, Any]) -> None:
        if self.rank == 0:
            with open(self.run_dir / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps(record) + "\n")

    # ------------------------------------------------------------------ loop
    def _batches(self, n: int, epoch: int) -> Iterator[torch.Tensor]:
        """Index batches of ``epoch`` in a seeded order; this rank's share of each."""
        from ..data import epoch_seed

        gen = torch.Generator().manual_seed(epoch_seed(self.cfg.seed, epoch) + 1)
        order = torch.randperm(n, generator=gen)
        bs = self.cfg.optim.batch_size
        for i in range(0, n - bs + 1 if n >= bs else 1, bs):
            yield order[i : i + bs][self.rank :: self.world]

    def _diverged(self, what: str) -> TrainingDiverged:
        kept = (
            f"the last good checkpoint is kept at {self.ckpt_path}"
            if self.ckpt_path.is_file()
            else "no checkpoint had been saved yet"
        )
        return TrainingDiverged(
            f"{what} at epoch {self.epoch + 1}, step {self.step + 1}; {kept} "
            f"(try a lower optim.lr, optim.loc_lr_scale < 1 or a bounded transform)"
        )

    def _step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        try:
            logits = self.net(x)
            loss = F.cross_entropy(logits, y)
            penalty = _penalty(self.model, x)
        except NonFiniteError as err:  # the transformer's params went NaN/Inf
            raise self._diverged(f"training diverged ({err})") from None
        total = loss if penalty is None else loss + penalty
        if not torch.isfinite(total):
            raise self._diverged(f"loss became {float(total.detach())}")
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        if self.cfg.optim.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        self.opt.step()
        loss_value = float(loss.detach())
        self.epoch_stats["loss_sum"] += loss_value * y.shape[0]
        self.epoch_stats["wrong"] += int((logits.argmax(1) != y).sum())
        self.epoch_stats["seen"] += int(y.shape[0])
        return loss_value

    def _spent(self, start: float) -> float:
        """Seconds of training so far, counting the part of the current epoch since ``start``."""
        return self.elapsed + (time.perf_counter() - start)

    def _out_of_time(self, start: float) -> bool:
        minutes = self.cfg.run.minutes
        return minutes is not None and self._spent(start) >= minutes * 60

    def _run_epoch(self) -> bool:
        """Train the rest of the current epoch; False if the time budget ran out inside it."""
        split = self.data.train(self.epoch)
        batches = list(self._batches(split.y.shape[0], self.epoch))
        bar = self._bar(len(batches))
        if bar is not None:
            bar.update(self.step)
        start = time.perf_counter()
        try:
            for idx in batches[self.step :]:
                # the rate follows the schedule step by step (cosine also follows the time budget)
                factor = _lr_factor(
                    self.cfg, self.epoch + self.step / len(batches), self._spent(start)
                )
                for g in self.opt.param_groups:
                    g["lr"] = g["base_lr"] * factor
                loss = self._step(split.x[idx].to(self.device), split.y[idx].to(self.device))
                self.step += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.3f}")
                if self._out_of_time(start) or self.interrupted:
                    return False
            return True
        finally:
            self.elapsed += time.perf_counter() - start
            if bar is not None:
                bar.close()

    def _bar(self, total: int) -> Any:
        if not self.progress or self.rank != 0:
            return None
        try:
            from tqdm import tqdm
        except ImportError:
            return None
        return tqdm(
            total=total,
            desc=f"epoch {self.epoch + 1}/{self.cfg.run.epochs}",
            leave=False,
            file=sys.stderr,
            dynamic_ncols=True,
        )

    def _end_epoch(self) -> None:
        s = self.epoch_stats
        start = time.perf_counter()
        val = evaluate(
            self.model, self.data.eval_split("val"), self.cfg.run.eval_batch_size, self.device
        )
        self.elapsed += time.perf_counter() - start
        record = {
            "epoch": self.epoch + 1,
            "train_loss": s["loss_sum"] / max(s["seen"], 1),
            "train_error": 100.0 * s["wrong"] / max(s["seen"], 1),
            "val_loss": val["loss"],
            "val_error": val["error"],
            "lr": self.opt.param_groups[0]["lr"],
            "elapsed": round(self.elapsed, 3),
        }
        self.history.append(record)
        self._log(record)
        if self.best["val_error"] is None or val["error"] < self.best["val_error"]:
            self.best = {
                "val_error": val["error"],
                "epoch": self.epoch + 1,
                "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            }
        if self.rank == 0:
            print(
                f"epoch {record['epoch']:3d}  train loss {record['train_loss']:.4f} "
                f"err {record['train_error']:5.2f}%  val loss {record['val_loss']:.4f} "
                f"err {record['val_error']:5.2f}%  ({self.elapsed:.0f}s)",
                file=sys.stderr,
                flush=True,
            )
        self.epoch += 1
        self.step = 0
        self.epoch_stats = {"loss_sum": 0.0, "wrong": 0, "seen": 0}

    def fit(self) -> dict[str, Any]:
        """Train until ``run.epochs`` or ``run.minutes``; write and return the result."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.rank == 0:
            atomic_write_text(
                self.run_dir / "config.json", json.dumps(config_to_dict(self.cfg), indent=2) + "\n"
            )
            # metrics.jsonl mirrors the checkpoint's history (drops epochs logged after the last save)
            atomic_write_text(
                self.run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in self.history)
            )
        self.net.train()
        previous = _catch_sigint(self)
        try:
            while self.epoch < self.cfg.run.epochs:
                finished = self._run_epoch()
                if finished:
                    self._end_epoch()
                self.save()
                if not finished or self.interrupted:
                    break
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        if self.interrupted:
            raise TrainingInterrupted(
                f"interrupted at epoch {self.epoch + 1}, step {self.step}; checkpoint saved to "
                f"{self.ckpt_path}; continue with --resume"
            )
        return self.finish()

    def finish(self) -> dict[str, Any]:
        """Evaluate the best-on-validation weights on the test set and write ``result.json``."""
        if self.best["model"] is not None:
            model = build_model(self.cfg, self.data.in_shape, self.data.num_classes).to(self.device)
            model.load_state_dict(self.best["model"])
        else:  # stopped inside the first epoch: no validation yet, use the current weights
            model = self.model
        bs = self.cfg.run.eval_batch_size
        if self.best["model"] is not None:  # measured when the best epoch ended
            val_error = float(self.best["val_error"])
        else:
            val_error = evaluate(model, self.data.eval_split("val"), bs, self.device)["error"]
        test = evaluate(model, self.data.eval_split("test"), bs, self.device)
        result = {
            "test_error": test["error"],
            "val_error": val_error,
            "test_loss": test["loss"],
            "best_epoch": self.best["epoch"],
            "epochs": self.epoch,
            "steps_in_partial_epoch": self.step,
            "train_seconds": round(self.elapsed, 2),
            "params": self.params,
            "model": self.cfg.model.name,
            "data": self.data.name,
            "test_is_val": self.data.test_is_val,
            "seed": self.cfg.seed,
            "device": str(self.device),
            "hardware": _hardware(self.device),
            "versions": {
                "torchstn": __version__,
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
        }
        if self.rank == 0:
            atomic_write_text(self.run_dir / "result.json", json.dumps(result, indent=2) + "\n")
        return result


def _catch_sigint(trainer: Trainer) -> Any:
    """Route Ctrl-C to ``trainer.interrupted`` (main thread only); returns the old handler."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        if trainer.interrupted:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        trainer.interrupted = True

    return signal.signal(signal.SIGINT, handler)


def _hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import os

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
