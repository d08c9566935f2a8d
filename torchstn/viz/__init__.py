"""Every picture torchstn draws, in one package, and the one way it reaches matplotlib
(:mod:`torchstn.viz._mpl`: imported when a picture is first drawn, Agg backend, a one-line error
naming the ``[plot]`` extra when it is missing).

* :mod:`~torchstn.viz.transformer`: inputs with the region their transformer samples
  (:func:`torchstn.output_frame`), outputs, predictions, training curves (``torchstn visualize``);
* :mod:`~torchstn.viz.report`: the run report, one self-contained HTML page (``torchstn report``);
* :mod:`~torchstn.viz.samples`: a labelled grid of a data set's samples (``torchstn data preview``);
* :mod:`~torchstn.viz.boxes`: co-localisation's crops and true boxes;
* :mod:`~torchstn.viz.volumes`: volumes as orthogonal slices and a maximum-intensity
  projection, with the box a 3-D transformer samples;
* :mod:`~torchstn.viz.fields`: dense fields: the deformed grid, the Jacobian determinant map
  (folds marked) and the registration figure (fixed, moving, warped, differences), for images
  and volume slices; :mod:`~torchstn.viz.registration`: a registration model's pictures
  (``torchstn visualize`` and ``report`` of a registration run).

The guide's figures (:mod:`torchstn.explain`) draw through the same matplotlib entry.
"""

from __future__ import annotations

from ._mpl import pyplot, save_figure
from .boxes import save_boxes_png, save_run_boxes
from .fields import (
    draw_deformed_grid,
    draw_jacobian,
    field_convention_figure,
    registration_figure,
    save_registration_figure,
)
from .registration import registration_pictures
from .report import learned_geometry, write_report
from .samples import sample_titles, save_preview, to_rgb
from .transformer import (
    curves_figure,
    data_label,
    identity_offsets,
    input_transformers,
    plot_curves,
    plot_predictions,
    plot_transformations,
    read_metrics,
    sampling_mesh,
    transformations_figure,
    transformer_params,
    untrained_warnings,
)
from .volumes import draw_volume, volume_figure, volume_views

__all__ = [
    "curves_figure",
    "data_label",
    "draw_deformed_grid",
    "draw_jacobian",
    "draw_volume",
    "field_convention_figure",
    "identity_offsets",
    "input_transformers",
    "learned_geometry",
    "plot_curves",
    "plot_predictions",
    "plot_transformations",
    "pyplot",
    "read_metrics",
    "registration_figure",
    "registration_pictures",
    "sample_titles",
    "sampling_mesh",
    "save_boxes_png",
    "save_figure",
    "save_preview",
    "save_registration_figure",
    "save_run_boxes",
    "to_rgb",
    "transformations_figure",
    "transformer_params",
    "untrained_warnings",
    "volume_figure",
    "volume_views",
    "write_report",
]
