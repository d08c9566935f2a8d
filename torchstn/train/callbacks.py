"""Callbacks: code that runs at fixed points of a :class:`~torchstn.train.Trainer`'s run.

A callback is an object with any of the methods of :class:`Callback` (subclassing it is
convenient, not required); pass a list of them as ``Trainer(..., callbacks=[...])``. Every
process of a torchrun run calls them (compare ``trainer.rank`` to 0 to act once). They see the
trainer as it is: its ``model``, ``epoch``, ``step``, ``device``, ``history``, ``run_dir``.

Example: the transformer's params on fixed images after every epoch::

    class Snapshots(Callback):
        def __init__(self, x):
            self.x, self.params = x, []

        def on_epoch_end(self, trainer, record):
            if not record.get("partial"):
                self.params.append(trainer.model.transformer.localize(self.x).detach())
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the trainer calls its callbacks; they import nothing of it at run time
    from .trainer import Trainer

__all__ = ["Callback"]


class Callback:
    """The points of a run a callback can act at; each does nothing here."""

    def on_fit_start(self, trainer: Trainer) -> None:
        """Before the first step of :meth:`Trainer.fit` (after a resume: before its next step)."""

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """After an epoch's validation, with its ``metrics.jsonl`` record (``record["partial"]``
        when the time budget ended the epoch early). ``trainer.epoch`` is still the epoch's
        0-based index."""

    def on_fit_end(self, trainer: Trainer, result: dict[str, Any]) -> None:
        """After the test evaluation, with the ``result.json`` numbers."""
