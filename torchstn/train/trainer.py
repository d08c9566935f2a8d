"""The training loop: one epoch after another, resumable to the step, budgeted in minutes.

Reads top to bottom: ``Trainer.fit`` -> ``_run_epoch`` -> ``_step``. Everything random comes from
seeds (the model's initialisation from ``seed``, each epoch's data and order from
``epoch_seed(seed, epoch)``), so the same seed gives the same numbers and a resumed run ends with
the weights of an uninterrupted one. What the steps minimise and how validation scores the weights
is the run's objective (:mod:`torchstn.train.objective`: classification, or co-localisation).

The best weights are those of the lowest validation ``error``, measured after every epoch and,
when the time budget ends inside an epoch, after that partial epoch too (its ``metrics.jsonl``
record says ``"partial": true`` and its ``steps``): with the cosine schedule its steps are the
low-rate tail the schedule was built for.

Under ``torchrun`` (see :mod:`torchstn.train.distributed`) the config's batch size is the global
batch: each rank takes an equal slice of every batch, DDP averages the gradients, validation and
test are evaluated on shards and summed, and every decision that ends the loop or sets the
learning rate comes from values all ranks agree on. Only rank 0 writes files.

A run owns its folder while :meth:`Trainer.fit` runs: rank 0 holds an exclusive lock on
``RUN_DIR/.lock`` (:class:`RunFolderLock`), so a second run into the same folder stops in one
line instead of mixing its files with the first one's, and the temporary files a killed run left
(``kill -9`` while a checkpoint was written) are deleted when the next run takes the folder.
SIGTERM (what schedulers send) stops a run like Ctrl-C: at the next step, with a checkpoint.
"""

from __future__ import annotations

import copy
import errno
import json
import math
import os
import platform
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__
from .._atomic import remove_stale_temps, write_error
from .._checks import set_finite_checks
from ..errors import ConfigError, DataError, TorchSTNError
from ..models import count_params
from ..module import RecordedParams, recording_params
from ..optim import param_groups
from ..preprocess import with_preprocess
from .checkpoint import atomic_write_text, load_checkpoint, save_checkpoint
from .config import Config, config_from_dict, config_to_dict
from .distributed import (
    agree,
    all_reduce_sum,
    init_from_env,
    launched_world_size,
    split_batch,
)
from .evaluate import autocast_context, build_model, evaluate, resolve_device
from .objective import get_objective

__all__ = [
    "RESUMABLE",
    "RunFolderLock",
    "Trainer",
    "TrainingDiverged",
    "TrainingInterrupted",
    "autocast_context",
    "build_model",
    "evaluate",
    "resolve_device",
    "resumed_config",
]

#: settings a resumed run takes from the command line: its budget and how it runs on this
#: machine. Any other setting given must equal the run's (:func:`resumed_config`).
RESUMABLE = (
    "run.epochs",
    "run.minutes",
    "run.checkpoint_every",
    "run.num_threads",
    "data.num_workers",
    "device",
)
#: the files a run writes into its folder (whose stale temporary files a new run deletes).
RUN_FILES = ("checkpoint.pt", "config.json", "metrics.jsonl", "result.json")
#: the sections of a config (the other top-level keys are settings).
_SECTIONS = ("data", "model", "optim", "run", "objective")
#: user-data paths of ``data``: recorded absolute, compared absolute.
_DATA_PATHS = ("path", "val_path", "test_path")


class TrainingDiverged(TorchSTNError):
    """The loss became NaN or Inf; the last good checkpoint is kept."""


class TrainingInterrupted(TorchSTNError):
    """Ctrl-C (SIGINT) or SIGTERM stopped the run between two steps; a checkpoint was saved."""


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


def _penalty(records: list[RecordedParams]) -> torch.Tensor | None:
    """Identity penalty of the params every transformer with a positive ``penalty_weight``
    reported during the step's forward pass (each call once, at any stage of the network)."""
    terms = [r.transformer.penalty(r.params) for r in records if r.transformer.penalty_weight > 0]
    return torch.stack(terms).sum() if terms else None


def resolve_memory_format(name: str, model: nn.Module, device: torch.device) -> torch.memory_format:
    """``run.memory_format`` for ``model`` on ``device``: ``auto`` is channels_last on the CPU
    when the model has a 2-D convolution (oneDNN's pooling and first convolutions run faster in
    that layout: ``torchstn bench --only options``), contiguous otherwise."""
    if name == "channels_last":
        return torch.channels_last
    if name == "contiguous":
        return torch.contiguous_format
    has_conv = any(isinstance(m, nn.Conv2d) for m in model.modules())
    return torch.channels_last if device.type == "cpu" and has_conv else torch.contiguous_format


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
        progress: show a progress bar per epoch (tqdm, when installed; rank 0 only).
        settings: with ``resume``, the settings given for the resumed run (nested dicts, as a
            config file and ``--set`` give them; ``torchstn train --resume``): those of
            :data:`RESUMABLE` are applied, any other must equal the run's (see
            :func:`resumed_config`).

    Raises:
        ConfigError: ``settings`` change a setting of the run that is not in :data:`RESUMABLE`.
    """

    def __init__(
        self,
        cfg: Config,
        run_dir: str | Path,
        resume: bool = False,
        progress: bool = True,
        *,
        settings: dict[str, Any] | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        # the code this process loaded: a commit or an edit made since (while earlier runs of a
        # long reproduce trained, or this one does) is not the code that runs
        self.source_commit = loaded_commit()
        self.ckpt_path = self.run_dir / "checkpoint.pt"
        # the checkpoint as this run found it: fit() refuses to go on when another process wrote
        # one meanwhile (two runs started into one folder, the first done before the second began)
        self._found_ckpt = _file_identity(self.ckpt_path)
        self.state: dict[str, Any] | None = None
        if resume:
            self.state = load_checkpoint(self.ckpt_path)
            # a resumed run keeps its config; only its budget and how it runs may change
            cfg = resumed_config(self.state["config"], cfg, settings, self.run_dir)
        else:
            cfg = copy.deepcopy(cfg).validate()
        _absolute_data_paths(cfg)
        self.cfg = cfg
        # what the run optimises and how it is scored: classification or co-localisation
        self.objective = get_objective(cfg)
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
        # fp16 needs a loss scale against underflowing gradients; bf16 has float32's range
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.run.precision == "fp16")
        # the network the steps run: normalisation (if any) first, as torchstn.load rebuilds it
        self.net: nn.Module = with_preprocess(self.model, self.data.preprocess)
        self.net = self.objective.train_net(self.net)  # what computes the loss (DDP wraps it)
        if self.world.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.net, device_ids=ids)
        # progress of the run
        self.epoch, self.step, self.elapsed = 0, 0, 0.0
        # training statistics of the current epoch, summed over ranks (identical on every rank);
        # each rank adds its own steps to _local until the next _flush_stats
        self.epoch_stats = {"loss_sum": 0.0, "wrong": 0, "seen": 0, "skipped": 0}
        self._local = [0.0, 0.0, 0.0, 0.0]
        self.best: dict[str, Any] = {"val_error": None, "epoch": None, "model": None}
        self.history: list[dict[str, Any]] = []
        self.interrupted = False  # set by SIGINT or SIGTERM; checked between steps
        self._signal: str | None = None  # the signal that set it
        self._lock: RunFolderLock | None = None  # rank 0's lock on run_dir while fit() runs
        self._out_of_time = False  # the time budget ran out in the last _run_epoch
        # what the ranks agreed on at the last step: time spent (the slowest rank's), stop
        self._agreed_spent, self._agreed_stop = self.elapsed, False
        if self.state is not None:
            self._restore(self.state)

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
        self.epoch_stats = dict(state["epoch_stats"])
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
            "epoch_stats": dict(self.epoch_stats),
            "best": dict(self.best),
            "history": list(self.history),
            "world_size": self.world.size,
            "data_info": self.data.info(),
            "torchstn_version": __version__,
        }

    def _flush_stats(self) -> None:
        """Add every rank's statistics since the last flush to ``epoch_stats`` (collective)."""
        loss_sum, wrong, seen, skipped = all_reduce_sum(self._local, self.world, self.device)
        s = self.epoch_stats
        self.epoch_stats = {
            "loss_sum": s["loss_sum"] + loss_sum,
            "wrong": s["wrong"] + round(wrong),
            "seen": s["seen"] + round(seen),
            "skipped": s.get("skipped", 0) + round(skipped),
        }
        self._local = [0.0, 0.0, 0.0, 0.0]

    def save(self) -> None:
        """Write the checkpoint (every rank must call it: it gathers the epoch's statistics)."""
        self._flush_stats()
        if self.rank == 0:
            try:
                save_checkpoint(self.ckpt_path, self._snapshot())
            except DataError as err:  # a full disk: the last checkpoint is intact
                raise DataError(f"{err}; {self._kept()}, continue with --resume") from None

    def _log(self, record: dict[str, Any]) -> None:
        """Append ``record`` to ``metrics.jsonl`` (rank 0): whole lines only, a line a full disk
        cut is taken back."""
        if self.rank != 0:
            return
        path = self.run_dir / "metrics.jsonl"
        line = (_json_line(record) + "\n").encode()
        try:
            with open(path, "ab") as fh:
                end = fh.tell()
                try:
                    fh.write(line)
                    fh.flush()
                except OSError:
                    fh.truncate(end)
                    raise
        except OSError as err:
            raise DataError(f"{write_error(path, err)}; {self._kept()}") from None

    # ------------------------------------------------------------------ loop
    def _kept(self) -> str:
        """What a stopped run leaves behind, for its error message."""
        if self.ckpt_path.is_file():
            return f"the last good checkpoint is kept at {self.ckpt_path}"
        return "no checkpoint had been saved yet"

    def _diverged(self, what: str) -> TrainingDiverged:
        kept = self._kept()
        return TrainingDiverged(
            f"{what} at epoch {self.epoch + 1}, step {self.step + 1}; {kept} "
            f"(try a lower optim.lr, optim.loc_lr_scale < 1 or a bounded transform)"
        )

    def _laid_out(self, x: torch.Tensor) -> torch.Tensor:
        """A batch of images in the run's memory format (other tensors as they are)."""
        return x.contiguous(memory_format=self.memory_format) if x.dim() == 4 else x

    def _step(
        self, x: torch.Tensor, y: torch.Tensor, progress: float, start: float, bad: str | None
    ) -> float:
        """One optimisation step at ``progress`` (fractional epoch); returns this rank's loss.

        The forward pass is followed by the step's one collective decision (:func:`agree`): did
        any rank see a non-finite loss or an unreadable image (``bad``: its message), how much
        time has the slowest rank spent, was any rank interrupted. The learning rate and the stop
        are then the same on every rank.
        """
        if bad is not None or y.shape[0] == 0:
            # no forward: agree on stopping, so that no rank waits for the others' gradients
            self._agree_bad_data(bad or "every image of a batch was unreadable", start)
        # the transformers' own NaN/Inf check would sync the device once more per step and, under
        # torchrun, raise on one rank alone; the loss check below covers it (NaN params give a
        # NaN loss) and is agreed by all ranks
        with (
            set_finite_checks(False),
            autocast_context(self.cfg.run.precision, self.device),
            recording_params(self.net) as records,
        ):
            loss, out = self.objective.loss(
                self.net, x, y, epoch=self.epoch, step=self.step, world=self.world
            )
            penalty = _penalty(records)
        total = loss if penalty is None else loss + penalty
        loss_value = float(loss.detach())
        total_value = loss_value if penalty is None else float(total.detach())
        bad_loss, spent, stop, bad_data = agree(
            [
                float(not math.isfinite(total_value)),
                self._spent(start),
                float(self.interrupted),
                0.0,
            ],
            self.world,
            self.device,
        )
        self._agreed_spent, self._agreed_stop = spent, bool(stop)
        if bad_data:
            raise DataError("stopped: another process met an unreadable image (see its message)")
        if bad_loss:
            raise self._diverged(
                "loss became NaN or Inf on some rank"
                if self.world.distributed
                else f"loss became {total_value}"
            )
        factor = _lr_factor(self.cfg, progress, spent)
        for g in self.opt.param_groups:
            g["lr"] = g["base_lr"] * factor
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if self.cfg.optim.grad_clip:
            self.scaler.unscale_(self.opt)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        self._local[0] += loss_value * y.shape[0]
        self._local[1] += self.objective.count(out, y)
        self._local[2] += float(y.shape[0])
        return loss_value

    def _agree_bad_data(self, message: str, start: float) -> None:
        """Stop every rank because this one met an unreadable image (``data.skip_bad`` is off)."""
        if self.world.distributed:
            print(f"torchstn: rank {self.rank}: {message}", file=sys.stderr, flush=True)
            agree([0.0, self._spent(start), float(self.interrupted), 1.0], self.world, self.device)
        kept = self._kept()
        raise DataError(f"{message}; {kept} (set data.skip_bad: true to skip such images)")

    def _spent(self, start: float) -> float:
        """Seconds of training so far, counting the part of the current epoch since ``start``."""
        return self.elapsed + (time.perf_counter() - start)

    def _run_epoch(self) -> bool:
        """Train the rest of the current epoch; True if it is complete. False when the time
        budget (``_out_of_time`` is then set) or Ctrl-C stopped it inside the epoch."""
        self._out_of_time = False
        # the clock starts before the epoch's data are made: a generated task's fresh
        # distortions are part of the run's cost, so the time budget counts them
        start = time.perf_counter()
        split = self.data.train(self.epoch)
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
        skip_bad = self.cfg.data.skip_bad
        try:
            for batch in split.batches(order):
                bad = None
                if batch.bad:
                    if skip_bad:
                        self._local[3] += len(batch.bad)
                        for message in batch.bad:
                            print(f"torchstn: skipped {message}", file=sys.stderr, flush=True)
                    else:
                        bad = batch.bad[0]
                if bad is None and batch.y.shape[0] == 0 and not self.world.distributed:
                    self.step += 1  # every image of the batch was skipped: nothing to learn
                    continue
                # the rate follows the schedule step by step (cosine also follows the time budget)
                loss = self._step(
                    self._laid_out(batch.inputs(self.device)),
                    batch.y.to(self.device, non_blocking=True),
                    self.epoch + self.step / num_batches,
                    start,
                    bad,
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

    def _evaluate(self, model: nn.Module, split: str) -> dict[str, float]:
        return self.objective.evaluate(
            with_preprocess(model, self.data.preprocess),
            self.data.eval_split(split),
            self.cfg.run.eval_batch_size,
            self.device,
            self.world,
            self.cfg.run.precision,
            self.cfg.data.skip_bad,
        )

    def _end_epoch(self, partial: bool = False) -> None:
        """Validate the weights, log the epoch's record and keep the best weights.

        ``partial``: the time budget ended the epoch after ``self.step`` steps. Its record says
        so (``"partial": true, "steps": k``) and its weights, trained at the lowest rates of a
        cosine schedule, may become the best; the epoch is not counted as done.
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
                "train_loss": s["loss_sum"] / max(s["seen"], 1),
                self.objective.train_rate: 100.0 * s["wrong"] / max(s["seen"], 1),
                **self.objective.val_fields(val),
                "lr": self.opt.param_groups[0]["lr"],
                "elapsed": round(self.elapsed, 3),
            }
        )
        if self.cfg.data.skip_bad:  # unreadable images left out of this epoch's training / val
            record["skipped"] = s.get("skipped", 0)
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
        if partial:
            return
        self.epoch += 1
        self.step = 0
        self.epoch_stats = {"loss_sum": 0.0, "wrong": 0, "seen": 0, "skipped": 0}

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
        if _file_identity(self.ckpt_path) != self._found_ckpt:
            self._lock.release()  # type: ignore[union-attr]
            self._lock = None
            raise ConfigError(
                f"{self.run_dir}: another run wrote its checkpoint while this one started; "
                "pass --resume to continue it or choose another --out"
            )
        removed = remove_stale_temps(self.run_dir, RUN_FILES)
        if removed:
            size = sum(_size(p) for p in removed)
            print(
                f"torchstn: deleted {len(removed)} temporary file(s) ({size / 1e6:.1f} MB) that a "
                f"stopped run left in {self.run_dir}",
                file=sys.stderr,
            )

    def _fit(self) -> dict[str, Any]:
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
                "".join(_json_line(r) + "\n" for r in self.history),
            )
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
                f"interrupted{by} at epoch {self.epoch + 1}, step {self.step}; checkpoint saved "
                f"to {self.ckpt_path}; continue with --resume"
            )
        return self.finish()

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
            # steps of the best epoch when the budget ended it (its weights were the best), else None
            "best_partial_steps": self.best.get("partial_steps"),
            "epochs": self.epoch,
            "steps_in_partial_epoch": self.step,
            "train_seconds": round(self.elapsed, 2),
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
            "hardware": _hardware(self.device),
            "versions": {
                "torchstn": __version__,
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
            "git_commit": self.source_commit,
            "config_sha256": config_hash(config_to_dict(self.cfg)),
        }
        if self.rank == 0:
            text = json.dumps(_finite(result), indent=2, allow_nan=False) + "\n"
            atomic_write_text(self.run_dir / "result.json", text)
        return result


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
    import threading

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


class RunFolderLock:
    """An exclusive lock on a run folder, for the life of a run (``RUN_DIR/.lock``).

    ``fcntl.flock`` on POSIX (``msvcrt.locking`` on Windows): the operating system releases it
    when the process ends, however it ends (``kill -9`` included), so a stale lock never blocks a
    later run. The lock file holds the owner's process id for the message of the run it stops;
    it stays in the folder. Creating the folder and the lock file is the run's first write, so an
    unwritable or full folder fails here, in one line, before any work.

    Args:
        run_dir: the run folder (created).

    Raises:
        DataError: the folder cannot be created or written, or another live process holds it.
    """

    NAME = ".lock"

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        path = self.run_dir / self.NAME
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._fh: Any = open(path, "a+")  # held for the run's life
        except OSError as err:
            raise _folder_error(self.run_dir, err) from None
        try:
            taken = _try_lock(self._fh)
            if not taken:
                raise _in_use(self.run_dir)
            self._fh.seek(0)
            self._fh.truncate()
            self._fh.write(f"{os.getpid()}\n")
            self._fh.flush()
        except OSError as err:
            self._fh.close()
            raise write_error(path, err) from None
        except BaseException:
            self._fh.close()
            raise

    @classmethod
    def check(cls, run_dir: str | Path) -> None:
        """Raise the "in use" :class:`DataError` now if another live process holds ``run_dir``
        (writes nothing: for failing fast, before a run reads its data; :meth:`Trainer.fit`
        takes the lock itself)."""
        path = Path(run_dir) / cls.NAME
        try:
            fh = open(path, "rb")
        except OSError:
            return  # no lock file (no run there yet), or none we may read: fit() will tell
        with fh:
            if not _try_lock(fh):
                raise _in_use(Path(run_dir))

    def release(self) -> None:
        """Give the folder back (closing the file releases the lock)."""
        if self._fh is not None and not self._fh.closed:
            self._fh.close()
        self._fh = None


def _try_lock(fh: Any) -> bool:
    """Take an exclusive, non-blocking lock on ``fh``; False when another process holds it."""
    if sys.platform == "win32":
        import msvcrt

        try:
            fh.seek(0)
            msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        import fcntl
    except ImportError:  # pragma: no cover - a platform with neither
        print("torchstn: cannot lock the run folder on this platform", file=sys.stderr)
        return True
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
            return False
        # a file system without locks (some network mounts): run unlocked, and say so
        print(
            f"torchstn: cannot lock the run folder ({err.strerror or err}); make sure no other "
            "run writes into it",
            file=sys.stderr,
        )
    return True


def _in_use(run_dir: Path) -> DataError:
    """The one line for a run folder whose lock another live process holds (its pid, if the lock
    file names one)."""
    try:
        text = (run_dir / RunFolderLock.NAME).read_text().strip()
    except OSError:
        text = ""
    owner = f"pid {text}" if text.isdigit() else "pid unknown"
    return DataError(f"run folder {run_dir} is in use by another process ({owner})")


def _folder_error(run_dir: Path, err: OSError) -> DataError:
    if isinstance(err, (FileExistsError, NotADirectoryError)):
        return DataError(f"run folder {run_dir}: a file is in the way (not a folder)")
    if err.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return write_error(run_dir / RunFolderLock.NAME, err)
    return DataError(f"run folder {run_dir}: cannot write there ({err.strerror or err})")


def _file_identity(path: Path) -> tuple[int, int, int] | None:
    """(inode, size, mtime) of ``path``, or None when there is none."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _finite(value: Any) -> Any:
    """``value`` with NaN and Inf floats as None, so that it is valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _json_line(record: dict[str, Any]) -> str:
    return json.dumps(_finite(record), allow_nan=False)


def _absolute_data_paths(cfg: Config) -> None:
    """User data's paths made absolute (against the current folder, as they were read)."""
    for key in _DATA_PATHS:
        value = getattr(cfg.data, key)
        if isinstance(value, str) and value:
            setattr(cfg.data, key, os.path.abspath(value))


def resumed_config(
    saved: dict[str, Any],
    cfg: Config,
    settings: dict[str, Any] | None,
    run_dir: str | Path = "the run",
) -> Config:
    """The config a resumed run continues with: the run's own (``saved``, from its checkpoint).

    ``settings`` are the settings given for the resumed run (nested dicts; ``None``: the budget
    of ``cfg``, ``run.epochs`` and ``run.minutes``). Those of :data:`RESUMABLE` (the budget and
    how the run uses this machine) are applied; any other that differs from the run's is refused,
    rather than silently ignored: a run that changed its learning rate or model half-way would
    no longer be the run its folder describes. The device is always ``cfg.device``. Data paths
    compare as absolute paths (relative ones against the current folder).

    Raises:
        ConfigError: naming every setting that differs from the run's.
    """
    base = config_to_dict(config_from_dict(saved))
    if settings is None:
        settings = {"run": {"epochs": cfg.run.epochs, "minutes": cfg.run.minutes}}
    merged = json.loads(json.dumps(base))
    for key, value in settings.items():
        if key in _SECTIONS and isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    merged["device"] = cfg.device
    new = config_from_dict(merged)
    new_values = config_to_dict(new)

    def leaves(values: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in values.items():
            if key in _SECTIONS and isinstance(value, dict):
                out.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                out[key] = value
        return out

    def norm(key: str, value: Any) -> Any:
        if key.startswith("data.") and key[5:] in _DATA_PATHS and isinstance(value, str):
            return os.path.abspath(value)
        return value

    old, now = leaves(base), leaves(new_values)
    changed = [k for k in now if norm(k, now[k]) != norm(k, old.get(k))]
    refused = [k for k in changed if k not in RESUMABLE]
    if refused:

        def short(value: Any) -> str:
            text = json.dumps(value)
            return text if len(text) <= 40 else text[:37] + "..."

        def differences(key: str) -> list[str]:
            a, b = old.get(key), now[key]
            if isinstance(a, dict) and isinstance(b, dict):  # options: the keys that differ
                subs = sorted(k for k in {*a, *b} if a.get(k, ...) != b.get(k, ...))
                return [
                    f"{key}.{k} {short(a.get(k))} (given {short(b.get(k))})"
                    if k in a and k in b
                    else f"{key}.{k} {'unset' if k in b else short(a[k])} "
                    f"(given {short(b[k]) if k in b else 'nothing'})"
                    for k in subs
                ]
            return [f"{key} {short(a)} (given {short(b)})"]

        what = ", ".join(d for k in refused for d in differences(k))
        raise ConfigError(
            f"--resume: {run_dir} was trained with {what}; a resumed run keeps its settings "
            f"(only {', '.join(RESUMABLE)} may change): train into a new --out to change them"
        )
    return new


def config_hash(values: dict[str, Any]) -> str:
    """SHA-256 of a resolved config (its JSON with sorted keys): two runs with the same hash
    were configured identically."""
    import hashlib

    text = json.dumps(values, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


_LOADED_COMMIT: list[str | None] = []  # loaded_commit's answer, once asked


def loaded_commit() -> str | None:
    """The commit of the code this process runs: :func:`source_commit` at the first call (the
    process's first Trainer, soon after it imported torchstn), the same answer at every later
    call. A ``torchstn reproduce`` trains run after run in one process with the code it imported
    at its start, so asking git again for each run would name commits made in the meantime."""
    if not _LOADED_COMMIT:
        _LOADED_COMMIT.append(source_commit())
    return _LOADED_COMMIT[0]


def source_commit() -> str | None:
    """The git commit of the torchstn source that runs (``-dirty`` appended when tracked files
    under ``torchstn/`` or ``configs/`` differ from it), or None outside the git checkout the
    package lives in."""
    import subprocess

    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--show-toplevel", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
        lines = head.stdout.split()
        # only the checkout the package itself lives in (not a repository around a venv)
        if head.returncode != 0 or len(lines) != 2 or Path(lines[0]).resolve() != root:
            return None
        dirty = subprocess.run(
            # the code and the configs: results files written by runs do not make it dirty
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "torchstn", "configs"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return lines[1] + ("-dirty" if dirty.stdout.strip() else "")


def _hardware(device: torch.device) -> str:
    """The GPU's name, or the CPU's with cores, threads, kernel path and instruction sets."""
    from ..hardware import describe

    return describe(device)
