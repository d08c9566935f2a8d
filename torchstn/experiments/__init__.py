"""The paper's experiments as a library: the tables (:mod:`~torchstn.experiments.tables`, one
file per table that plans or scores differently, e.g. :mod:`~torchstn.experiments.colocalization`),
the runner that plans, runs and records any of them (:mod:`~torchstn.experiments.runner`), and
RESULTS.md rendered from the records (:mod:`~torchstn.experiments.render`).
``torchstn reproduce`` is a thin command over them.

This is the repository's tooling shipped as a command: it imports the library (training, data,
models), and nothing of the library imports it.

Example:
    >>> from torchstn.experiments import get_table, table_names
    >>> table_names()
    ('table1', 'cluttered', 'addition', 'volumes', 'colocalization', 'registration')
    >>> get_table("table1").columns["RTS"]
    'table1/rts'
"""

from __future__ import annotations

from .colocalization import COLOCALIZATION, ColocalizationTable
from .curves import figures, write_all_figures
from .launch import LaunchOptions
from .registration import REGISTRATION, RegistrationTable
from .render import render_results
from .runner import (
    record,
    repo_relative,
    reproduce,
    reproduce_jobs,
    reproduce_submitit,
    run_one,
)
from .tables import (
    ADDITION,
    CLUTTERED,
    TABLE1,
    Options,
    PlannedRun,
    Table,
    budget_name,
    get_table,
    register_table,
    table_names,
)

__all__ = [
    "ADDITION",
    "CLUTTERED",
    "COLOCALIZATION",
    "REGISTRATION",
    "TABLE1",
    "ColocalizationTable",
    "LaunchOptions",
    "Options",
    "PlannedRun",
    "RegistrationTable",
    "Table",
    "budget_name",
    "figures",
    "get_table",
    "record",
    "register_table",
    "render_results",
    "repo_relative",
    "reproduce",
    "reproduce_jobs",
    "reproduce_submitit",
    "run_one",
    "table_names",
    "write_all_figures",
]
