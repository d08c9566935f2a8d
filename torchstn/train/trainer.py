"""The training loop: one epoch after another, resumable to the step, budgeted in epochs or
minutes.

Reads top to bottom: :meth:`Trainer.fit` -> ``_run_epoch`` -> ``_step``.
Everything random comes from seeds (the model's initialisation from ``seed``, each epoch's data
and order from ``epoch_seed(seed, epoch)``), so the same seed gives the same numbers and a resumed
run ends with the weights of an uninterrupted one. What the steps minimise and how validation
scores the weights is the run's objective (:mod:`torchstn.train.objective`), passed in or found by
the config's ``objective.name``; what else happens during a run is up to its callbacks
(:mod:`torchstn.train.callbacks`). The step itself is :class:`~torchstn.train.step.TrainStep`;
the run folder's lock and records are :mod:`torchstn.train.runfolder`; where the numbers came
from is :mod:`torchstn.train.provenance`.

The best weights are those of the lowest validation ``error``, measured after every epoch and,
when the time budget ends inside an epoch, after that partial epoch too (its ``metrics.jsonl``
record says ``"partial": true`` and its ``steps``): with the cosine schedule its steps are the
low-rate tail the schedule was built for.

Under ``torchrun`` (see :mod:`torchstn.train.distributed`) the config's batch size is the global
batch: each rank takes an equal slice of every batch, DDP averages the gradients, validation and
test are evaluated on shards and summed, and every decision that ends the loop or sets the
learning rate comes from values all ranks agree on. Only rank 0 writes files.

A run owns its folder while :meth:`Trainer.fit` runs (:class:`~torchstn.train.runfolder.
RunFolderLock`); the temporary files a killed run left are deleted when the next run takes the
folder. SIGTERM (what schedulers send) stops a run like Ctrl-C: at the next step, with a
checkpoint.
"""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn
from tqdm import tqdm

from .. import native
from .._atomic import atomic_write_text, write_error
from .._version import __version__
from ..errors import ConfigError, DataError, TorchSTNError
from ..models import count_params
from ..optim import param_groups
from ..preprocess import with_preprocess
from .callbacks import Callback
from .checkpoint import load_checkpoint, save_checkpoint
from .config import Config, config_to_dict
from .distributed import agree, all_reduce_sum, init_from_env, launched_world_size, split_batch
from .evaluate import EvalSettings, build_model, resolve_device
from .objective import Objective, get_objective
from .provenance import loaded_commit, provenance
from .resume import absolute_data_paths, resumed_config
from .runfolder import (
    RunFolderLock,
    append_record,
    file_identity,
    finite,
    json_line,
    remove_stale_files,
)
from .step import StepLoss, TrainStep, resolve_memory_format

__all__ = ["Trainer", "TrainingDiverged", "TrainingInterrupted"]


class TrainingDiverged(TorchSTNError):
    """The loss became NaN or Inf; the last good checkpoint is kept."""


class TrainingInterrupted(TorchSTNError):
    """Ctrl-C (SIGINT) or SIGTERM stopped the run between two steps; a checkpoint was saved."""


def images_before(history: list[dict[str, Any]]) -> int:
    """Training images seen before the current epoch: the count of the last whole epoch's record
    (a partial epoch's record, cut short by a time budget, is counted again by the record of the
    same epoch when a resumed run completes it)."""
    for record in reversed(history):
        if not record.get("partial"):
            return int(record.get("images_seen", 0))
    return 0


def learning_curve(history: list[dict[str, Any]]) -> list[list[float]]:
    """``[images seen, validation error]`` of every validation in ``history`` (a partial epoch's
    too), in order: the run's learning curve, as ``result.json`` keeps it.

    Example:
        >>> learning_curve([{"images_seen": 500, "val_error": 9.5}, {"val_error": 3.0}])
        [[500, 9.5]]
    """
    return [[r["images_seen"], r["val_error"]] for r in history if "images_seen" in r]


@dataclass
class EpochStats:
    """Training statistics of an epoch: the summed loss of its samples, the samples the
    objective counts (``wrong``: misclassified, or active triplets), the samples seen and the
    unreadable images skipped."""

    loss_sum: float = 0.0
    wrong: float = 0
    seen: float = 0
    skipped: float = 0

    def reduced(self, trainer: Trainer) -> EpochStats:
        """These statistics summed over the run's processes (collective), counts rounded."""
        loss_sum, wrong, seen, skipped = all_reduce_sum(
            [self.loss_sum, self.wrong, self.seen, self.skipped], trainer.world, trainer.device
        )
        return EpochStats(loss_sum, round(wrong), round(seen), round(skipped))

    def __add__(self, other: EpochStats) -> EpochStats:
        return EpochStats(
            self.loss_sum + other.loss_sum,
            self.wrong + other.wrong,
            self.seen + other.seen,
            self.skipped + other.skipped,
        )


class Verdict(NamedTuple):
    """What the ranks agree on after each forward pass (the maximum over ranks of each field)."""

    nonfinite: float  #: some rank's loss is NaN or Inf
    spent: float  #: seconds of training, the slowest rank's
    stop: float  #: some rank was interrupted (Ctrl-C, SIGTERM)


def lr_factor(cfg: Config, epoch: float, elapsed: float = 0.0) -> float:
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


class Trainer:
    """Train ``cfg`` into ``run_dir`` (``metrics.jsonl``, ``checkpoint.pt``, ``result.json``).

    Started by ``torchrun``, the trainer joins the process group of the launcher's environment
    (:func:`torchstn.train.distributed.init_from_env`) and trains with DDP.

    User data is recorded as it was read: ``data.path`` (``val_path``, ``test_path``) absolute,
    and ``data.fingerprints`` (:func:`torchstn.train.datamodule.fingerprint`), so that the run's
    data is found and recognised from any folder later.

    Args:
        cfg: the resolved configuration (not modified).
        run_dir: output folder (created when :meth:`fit` starts).
        resume: continue from ``run_dir/checkpoint.pt``: its saved config is used, with the
            budget (``run.epochs``, ``run.minutes``) and device of ``cfg``, or with ``settings``.
        progress: show a progress bar per epoch (tqdm; rank 0 only).
        settings: with ``resume``, the settings given for the resumed run (nested dicts, as a
            config file and ``--set`` give them; ``torchstn train --resume``): those of
            :data:`~torchstn.train.resume.RESUMABLE` are applied, any other must equal the run's
            (see :func:`~torchstn.train.resume.resumed_config`).
        objective: what the run minimises and how it is scored: an :class:`Objective` class,
            built with the run's resolved config (default: the registered objective of
            ``objective.name``).
        callbacks: objects with any of the methods of :class:`~torchstn.train.callbacks.Callback`,
            called in order at the run's fixed points.

    Raises:
        ConfigError: ``settings`` change a setting of the run that is not resumable, or the
            objective refuses the config.
    """

    def __init__(
        self,
        cfg: Config,
        run_dir: str | Path,
        resume: bool = False,
        progress: bool = True,
        *,
        settings: dict[str, Any] | None = None,
        objective: type[Objective] | None = None,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        self.run_dir = Path(run_dir)
        # the code this process loaded: a commit or an edit made since (while earlier runs of a
        # long reproduce trained, or this one does) is not the code that runs
        self.source_commit = loaded_commit()
        self.ckpt_path = self.run_dir / "checkpoint.pt"
        # the checkpoint as this run found it: fit() refuses to go on when another process wrote
        # one meanwhile (two runs started into one folder, the first done before the second began)
        self._found_ckpt = file_identity(self.ckpt_path)
        self.state: dict[str, Any] | None = None
        if resume:
            self.state = load_checkpoint(self.ckpt_path)
            # a resumed run keeps its config; only its budget and how it runs may change
            cfg = resumed_config(self.state["config"], cfg, settings, self.run_dir)
        else:
            cfg = copy.deepcopy(cfg).validate()
        absolute_data_paths(cfg)
        self.cfg = cfg
        self.objective = objective(cfg) if objective is not None else get_objective(cfg)
        self.callbacks = list(callbacks)
        self.progress = progress
        # the config's batch is the global batch: each rank takes an equal share of it (checked
        # before joining the process group, so a bad batch size fails fast on every rank)
        split_batch(cfg.optim.batch_size, launched_world_size())
        self.objective.check_world(launched_world_size())
        self.world, device = init_from_env(cfg.device)
        self.rank = self.world.rank
        if cfg.run.num_threads:
            torch.set_num_threads(int(cfg.run.num_threads))
        self.device = resolve_device(device)
        if cfg.run.precision == "fp16" and self.device.type == "cpu" and self.rank == 0:
            print(
                "torchstn: run.precision fp16 on the CPU is slow; bf16 is the CPU's half format",
                file=sys.stderr,
            )
        if cfg.run.deterministic:
            _make_deterministic(self.device)
        saved_info = (self.state or {}).get("data_info") or {}
        self.data = self.objective.build_data(
            preprocess=saved_info.get("preprocess"), pin_memory=self.device.type == "cuda"
        )
        # what was read (checked against the run's record when it has one, recorded otherwise)
        #: make the next epoch's training data while this one trains (data.prefetch; null:
        #: where training runs on a GPU; data modules without it make theirs as they go)
        prefetch = cfg.data.prefetch
        self._prefetch = bool(
            (self.device.type != "cpu" if prefetch is None else prefetch)
            and hasattr(self.data, "prefetch")
        )
        fingerprints = getattr(self.data, "fingerprints", None)
        if fingerprints:
            cfg.data.fingerprints = dict(fingerprints)
        self.model = build_model(cfg, self.data.in_shape, self.data.num_classes).to(self.device)
        #: the layout training images and convolution weights take (run.memory_format resolved)
        self.memory_format = resolve_memory_format(cfg.run.memory_format, self.model, self.device)
        self.model.to(memory_format=self.memory_format)  # type: ignore[call-overload]
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
        # the network the steps run: normalisation (if any) first, as torchstn.load rebuilds it
        net: nn.Module = with_preprocess(self.model, self.data.preprocess)
        net = self.objective.train_net(net)  # what computes the loss (DDP wraps it)
        if self.world.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            net = nn.parallel.DistributedDataParallel(net, device_ids=ids)
        self.net = net
        self.train_step = TrainStep(
            net,
            self.objective,
            self.opt,
            device=self.device,
            precision=cfg.run.precision,
            grad_clip=cfg.optim.grad_clip,
            clip_params=list(self.model.parameters()),
            world=self.world,
        )
        self.eval_settings = EvalSettings.of_run(cfg, self.device, self.world)
        # progress of the run
        self.epoch, self.step, self.elapsed = 0, 0, 0.0
        #: training statistics of the current epoch, summed over ranks (identical on every
        #: rank); each rank adds its own steps to ``_local`` until the next :meth:`_flush_stats`
        self.epoch_stats = EpochStats()
        self._local = EpochStats()
        self.best: dict[str, Any] = {"val_error": None, "epoch": None, "model": None}
        self.history: list[dict[str, Any]] = []
        self.interrupted = False  # set by SIGINT or SIGTERM; checked between steps
        self._signal: str | None = None  # the signal that set it
        self._lock: RunFolderLock | None = None  # rank 0's lock on run_dir while fit() runs
        self._out_of_time = False  # the time budget ran out in the last run_epoch
        # what the ranks agreed on at the last step: time spent (the slowest rank's), stop
        self._agreed_spent, self._agreed_stop = self.elapsed, False
        if self.state is not None:
            self._restore(self.state)

    @property
    def scaler(self) -> torch.amp.GradScaler:
        """The gradient scaler (enabled for fp16 only)."""
        return self.train_step.scaler

    # ------------------------------------------------------------------ state
    def _restore(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step, self.elapsed = (
            int(state["epoch"]),
            int(state["step"]),
            float(state["elapsed"]),
        )
        self.epoch_stats = EpochStats(**{"skipped": 0, **state["epoch_stats"]})
        self.best = dict(state["best"])
        self.history = list(state["history"])

    def _snapshot(self) -> dict[str, Any]:
        return {
            "config": config_to_dict(self.cfg),
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "epoch": self.epoch,
            "step": self.step,
            "elapsed": self.elapsed,
            "epoch_stats": asdict(self.epoch_stats),
            "best": dict(self.best),
            "history": list(self.history),
            "world_size": self.world.size,
            "data_info": self.data.info(),
            "torchstn_version": __version__,
        }

    def _flush_stats(self) -> None:
        """Add every rank's statistics since the last flush to ``epoch_stats`` (collective)."""
        self.epoch_stats = self.epoch_stats + self._local.reduced(self)
        self._local = EpochStats()

    def save(self) -> None:
        """Write the checkpoint (every rank must call it: it gathers the epoch's statistics)."""
        self._flush_stats()
        if self.rank == 0:
            try:
                save_checkpoint(self.ckpt_path, self._snapshot())
            except DataError as err:  # a full disk: the last checkpoint is intact
                raise DataError(f"{err}; {self._kept()}, continue with --resume") from None

    def _log(self, record: dict[str, Any]) -> None:
        """Append ``record`` to ``metrics.jsonl`` (rank 0)."""
        if self.rank != 0:
            return
        path = self.run_dir / "metrics.jsonl"
        try:
            append_record(path, record)
        except OSError as err:
            raise DataError(f"{write_error(path, err)}; {self._kept()}") from None

    def _kept(self) -> str:
        """What a stopped run leaves behind, for its error message."""
        if self.ckpt_path.is_file():
            return f"the last good checkpoint is kept at {self.ckpt_path}"
        return "no checkpoint had been saved yet"

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict[str, Any]:
        """Train until ``run.epochs`` or ``run.minutes``; write and return the result.

        The run folder is locked for the run (see :class:`RunFolderLock`).

        Raises:
            DataError: the folder cannot be written, is in use by another run, or the disk is
                full (the last checkpoint is kept).
            TrainingInterrupted: Ctrl-C or SIGTERM (a checkpoint was saved).
        """
        self._take_folder()
        try:
            return self._fit()
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def _fit(self) -> dict[str, Any]:
        native.path_counts(reset=True)  # result.json says which sampling path this run took
        if self.rank == 0:
            atomic_write_text(
                self.run_dir / "config.json",
                json.dumps(
                    {**config_to_dict(self.cfg), "world_size": self.world.size},
                    indent=2,
                    allow_nan=False,
                )
                + "\n",
            )
            # metrics.jsonl mirrors the checkpoint's history (drops epochs logged after the last save)
            atomic_write_text(
                self.run_dir / "metrics.jsonl",
                "".join(json_line(r) + "\n" for r in self.history),
            )
        for callback in self.callbacks:
            callback.on_fit_start(self)
        self.net.train()
        previous = _catch_signals(self)
        try:
            while self.epoch < self.cfg.run.epochs:
                complete = self._run_epoch()
                if complete:
                    self._end_epoch()
                    # its validation may have spent the rest of the budget: stop here rather
                    # than train one step of another epoch and validate that too
                    self._out_of_time = self._out_of_time or self._budget_spent()
                elif self._out_of_time:
                    # the budget ended inside the epoch: validate what it trained (the cosine
                    # schedule's low-rate tail), so that the best weights can be these
                    self._end_epoch(partial=True)
                self.save()
                if not complete or self._out_of_time or self.interrupted:
                    break
        finally:
            for signum, handler in previous.items():
                if handler is not None:  # None: a handler not set from Python, left alone
                    signal.signal(signum, handler)
        if self.interrupted:
            by = f" by {self._signal}" if self._signal else ""
            raise TrainingInterrupted(
                f"interrupted{by} at epoch {self.epoch + 1}, step {self.step}; checkpoint "
                f"saved to {self.ckpt_path}; continue with --resume"
            )
        return self.finish()

    def _run_epoch(self) -> bool:
        """Train the rest of the current epoch; True if it is complete. False when the time
        budget (``_out_of_time`` is then set) or Ctrl-C stopped it inside the epoch."""
        self._out_of_time = False
        # the clock starts before the epoch's data are made: a generated task's fresh
        # distortions are part of the run's cost, so the time budget counts them
        start = time.perf_counter()
        split = self.data.train(self.epoch)
        if self._prefetch and self.epoch + 1 < self.cfg.run.epochs:
            self.data.prefetch(self.epoch + 1)  # made while this epoch trains
        order = self.objective.batch_order(
            len(split),
            self.epoch,
            rank=self.world.rank,
            world_size=self.world.size,
            start=self.step,
        )
        num_batches = order.num_batches
        bar = self._bar(num_batches)
        if bar is not None:
            bar.update(self.step)
        every = self.cfg.run.checkpoint_every
        minutes = self.cfg.run.minutes
        try:
            for batch in split.batches(order):
                unreadable = None  # what stops the run (data.skip_bad off), if anything
                if batch.bad and not self.cfg.data.skip_bad:
                    unreadable = batch.bad[0]
                elif batch.bad:
                    self._local.skipped += len(batch.bad)
                    for message in batch.bad:
                        print(f"torchstn: skipped {message}", file=sys.stderr, flush=True)
                if unreadable is None and batch.y.shape[0] == 0 and self.world.distributed:
                    unreadable = "every image of a batch was unreadable"  # nothing to forward
                self._check_data(unreadable)
                if batch.y.shape[0] == 0:
                    self.step += 1  # every image of the batch was skipped: nothing to learn
                    continue
                # the rate follows the schedule step by step (cosine also follows the time budget)
                loss = self._step(
                    self._laid_out(batch.inputs(self.device)),
                    batch.y.to(self.device, non_blocking=True),
                    self.epoch + self.step / num_batches,
                    start,
                )
                self.step += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.3f}")
                out_of_time = minutes is not None and self._agreed_spent >= minutes * 60
                # one process stops at once; several stop together at the next agreed step
                stop = self._agreed_stop or (self.interrupted and not self.world.distributed)
                if out_of_time or stop:
                    self._out_of_time = out_of_time and not stop
                    # a budget that ends with the epoch's last step leaves a complete epoch
                    return self._out_of_time and self.step >= num_batches
                if every and self.step % every == 0 and self.step < num_batches:
                    self._pause_clock(start)
                    start = time.perf_counter()
                    self.save()
            return True
        finally:
            self._pause_clock(start)
            if bar is not None:
                bar.close()

    def _step(self, x: torch.Tensor, y: torch.Tensor, progress: float, start: float) -> float:
        """One optimisation step at ``progress`` (fractional epoch); returns this rank's loss.

        The forward pass is followed by the step's collective decision (:func:`agree`): did
        any rank see a non-finite loss, how much time has the slowest rank spent (``start``: when
        the epoch's clock started), was any rank interrupted. The learning rate and the stop are
        then the same on every rank.
        """
        loss = self.train_step.forward(x, y, epoch=self.epoch, step=self.step)
        self._agree(loss, start)
        factor = lr_factor(self.cfg, progress, self._agreed_spent)
        for g in self.opt.param_groups:
            g["lr"] = g["base_lr"] * factor
        self.train_step.update(loss)
        self._local.loss_sum += loss.value * y.shape[0]
        self._local.wrong += self.objective.count(loss.out, y)
        self._local.seen += float(y.shape[0])
        return loss.value

    def _agree(self, loss: StepLoss, start: float) -> None:
        """The ranks' decision after a forward pass: raise on a non-finite loss on any rank, else
        record the time spent (the slowest rank's) and whether any rank was interrupted."""
        mine = Verdict(nonfinite=not loss.finite, spent=self._spent(start), stop=self.interrupted)
        agreed = Verdict(*agree([float(v) for v in mine], self.world, self.device))
        self._agreed_spent, self._agreed_stop = agreed.spent, bool(agreed.stop)
        if agreed.nonfinite:
            what = "loss became NaN or Inf on some rank"
            if not self.world.distributed:
                what = f"loss became {loss.total_value}"
            raise TrainingDiverged(
                f"{what} at epoch {self.epoch + 1}, step {self.step + 1}; {self._kept()} "
                f"(try a lower optim.lr, optim.loc_lr_scale < 1 or a bounded transform)"
            )

    def _check_data(self, unreadable: str | None) -> None:
        """Stop when an image of the batch could not be read and ``data.skip_bad`` is off.

        Under torchrun the ranks agree on it before any forward pass (DDP's forward may itself
        wait for every rank), so a rank that meets such an image stops with its message and the
        others stop at the same batch saying why, instead of waiting for it forever.
        """
        if self.world.distributed:
            (anywhere,) = agree([float(unreadable is not None)], self.world, self.device)
            if unreadable is not None:
                print(f"torchstn: rank {self.rank}: {unreadable}", file=sys.stderr, flush=True)
            elif anywhere:
                raise DataError(
                    "stopped: another process met an unreadable image (see its message)"
                )
        if unreadable is not None:
            raise DataError(
                f"{unreadable}; {self._kept()} (set data.skip_bad: true to skip such images)"
            )

    def _laid_out(self, x: torch.Tensor) -> torch.Tensor:
        """A batch of images in the run's memory format (other tensors as they are)."""
        return x.contiguous(memory_format=self.memory_format) if x.dim() == 4 else x

    def _spent(self, start: float) -> float:
        """Seconds of training so far, counting the part of the current epoch since ``start``."""
        return self.elapsed + (time.perf_counter() - start)

    def _budget_spent(self) -> bool:
        """Whether the time budget is spent (the slowest rank's clock; collective under
        torchrun, called by every rank at the same point)."""
        if self.cfg.run.minutes is None:
            return False
        (spent,) = agree([self.elapsed], self.world, self.device)
        return spent >= self.cfg.run.minutes * 60

    def _pause_clock(self, start: float) -> None:
        # never behind the time the ranks agreed on (the slowest rank's), so every rank and the
        # checkpoint count the same budget
        self.elapsed = max(self.elapsed + time.perf_counter() - start, self._agreed_spent)

    def _bar(self, total: int) -> Any:
        if not self.progress or self.rank != 0:
            return None
        return tqdm(
            total=total,
            desc=f"epoch {self.epoch + 1}/{self.cfg.run.epochs}",
            leave=False,
            file=sys.stderr,
            dynamic_ncols=True,
        )

    # ------------------------------------------------------------------ validation and test
    def _evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        return self.objective.evaluate(
            with_preprocess(model, self.data.preprocess),
            self.data.eval_split(split),
            self.eval_settings,
        )

    def _end_epoch(self, partial: bool = False) -> None:
        """Validate the weights, log the epoch's record and keep the best weights.

        ``partial``: the time budget ended the epoch after ``self.step`` steps. Its record
        says so (``"partial": true, "steps": k``) and its weights, trained at the lowest rates of
        a cosine schedule, may become the best; the epoch is not counted as done.
        """
        self._flush_stats()
        s = self.epoch_stats
        start = time.perf_counter()
        val = self._evaluate(self.model, "val")
        self.elapsed += time.perf_counter() - start
        record: dict[str, Any] = {"epoch": self.epoch + 1}
        if partial:
            record.update(partial=True, steps=self.step)
        record.update(
            {
                # training images seen so far, every process together: the learning curve's axis
                "images_seen": images_before(self.history) + round(s.seen),
                "train_loss": s.loss_sum / max(s.seen, 1),
                self.objective.train_rate: 100.0 * s.wrong / max(s.seen, 1),
                **self.objective.val_fields(val),
                "lr": self.opt.param_groups[0]["lr"],
                "elapsed": round(self.elapsed, 3),
            }
        )
        if self.cfg.data.skip_bad:  # unreadable images left out of this epoch's training / val
            record["skipped"] = s.skipped
            record["val_skipped"] = val["skipped"]
        self.history.append(record)
        self._log(record)
        if self.best["val_error"] is None or val["error"] < self.best["val_error"]:
            self.best = {
                "val_error": val["error"],
                "epoch": self.epoch + 1,
                "model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            }
            if partial:
                self.best["partial_steps"] = self.step
        if self.rank == 0:
            what = f" (partial: {self.step} steps)" if partial else ""
            print(
                f"epoch {record['epoch']:3d}{what}  {self.objective.describe(record)}  "
                f"({self.elapsed:.0f}s)",
                file=sys.stderr,
                flush=True,
            )
        for callback in self.callbacks:
            callback.on_epoch_end(self, record)
        if partial:
            return
        self.epoch += 1
        self.step = 0
        self.epoch_stats = EpochStats()

    def finish(self) -> dict[str, Any]:
        """Evaluate the best-on-validation weights on the test set and write ``result.json``."""
        if self.best["model"] is not None:
            model = build_model(self.cfg, self.data.in_shape, self.data.num_classes).to(self.device)
            model.load_state_dict(self.best["model"])
        else:  # stopped inside the first epoch: no validation yet, use the current weights
            model = self.model
        if self.best["model"] is not None:  # measured when the best epoch ended
            val_error = float(self.best["val_error"])
        else:
            val_error = self._evaluate(model, "val")["error"]
        test = self._evaluate(model, "test")
        result = {
            "test_error": test["error"],
            "val_error": val_error,
            **self.objective.test_fields(test),
            "best_epoch": self.best["epoch"],
            # validation error against training images seen, one point per validation
            "curve": learning_curve(self.history),
            "images_seen": self.history[-1].get("images_seen", 0) if self.history else 0,
            # steps of the best epoch when the budget ended it (its weights were the best), else None
            "best_partial_steps": self.best.get("partial_steps"),
            "epochs": self.epoch,
            "steps_in_partial_epoch": self.step,
            "train_seconds": round(self.elapsed, 2),
            # generated tasks: time spent making (or, prefetched, waiting for) training data
            "data_wait_seconds": round(float(getattr(self.data, "wait_seconds", 0.0)), 2),
            "data_prefetch": self._prefetch,
            "params": self.params,
            "model": self.cfg.model.name,
            "objective": self.cfg.objective.name,
            "data": self.data.name,
            "test_is_val": self.data.test_is_val,
            "seed": self.cfg.seed,
            "device": str(self.device),
            "world_size": self.world.size,
            "batch_size": self.cfg.optim.batch_size,
            "precision": self.cfg.run.precision,
            "memory_format": "channels_last"
            if self.memory_format == torch.channels_last
            else "contiguous",
            **(
                {"skipped": {"at_load": self.data.skipped_at_load, "test": test["skipped"]}}
                if self.cfg.data.skip_bad
                else {}
            ),
            **provenance(config_to_dict(self.cfg), self.device, self.source_commit),
        }
        if self.rank == 0:
            text = json.dumps(finite(result), indent=2, allow_nan=False) + "\n"
            atomic_write_text(self.run_dir / "result.json", text)
        for callback in self.callbacks:
            callback.on_fit_end(self, result)
        return result

    # ------------------------------------------------------------------ the folder
    def _take_folder(self) -> None:
        """Lock the run folder (rank 0; every rank learns whether it could), delete the temporary
        files a killed run left there, and check that no other run wrote a checkpoint since this
        one read the folder."""
        failure: TorchSTNError | None = None
        if self.rank == 0:
            try:
                self._lock = RunFolderLock(self.run_dir)
            except TorchSTNError as err:
                failure = err
        if self.world.distributed:
            (failed,) = agree([float(failure is not None)], self.world, self.device)
            if failed and failure is None:
                raise DataError("stopped: rank 0 could not take the run folder (see its message)")
        if failure is not None:
            raise failure
        if self.rank != 0:
            return
        if file_identity(self.ckpt_path) != self._found_ckpt:
            self._lock.release()  # type: ignore[union-attr]
            self._lock = None
            raise ConfigError(
                f"{self.run_dir}: another run wrote its checkpoint while this one started; "
                "pass --resume to continue it or choose another --out"
            )
        remove_stale_files(self.run_dir)


def _make_deterministic(device: torch.device) -> None:
    """PyTorch's deterministic algorithms. On CUDA only a warning for ops without a deterministic
    kernel (``grid_sample``'s backward accumulates with atomic adds, so it has none)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def _catch_signals(trainer: Trainer) -> dict[int, Any]:
    """Route Ctrl-C (SIGINT) and SIGTERM (what schedulers and ``kill`` send) to
    ``trainer.interrupted`` (main thread only): the run stops at the next step with a checkpoint.
    A second signal stops at once. Returns the previous handlers, to restore."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum: int, frame: Any) -> None:
        if trainer.interrupted:  # a second signal stops at once
            raise KeyboardInterrupt
        trainer.interrupted = True
        trainer._signal = signal.Signals(signum).name

    previous: dict[int, Any] = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, handler)
    return previous
