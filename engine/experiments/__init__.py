"""Experiments: many training runs side by side (``dnupdate sweep``).

A stage after ``training``: every variant is an ordinary training run
(:class:`engine.training.session.TrainingSession`, the engine entry ``dnupdate train`` uses),
so a variant equals a standalone ``dnupdate train`` with the same ``--set`` values, bit for
bit. :mod:`engine.experiments.grid` turns ``--grid``/``--seeds`` into variants,
:mod:`engine.experiments.variant` runs one in the current process, and
:mod:`engine.experiments.sweep` spreads them over local worker processes
(:mod:`engine.experiments.local_workers`) or a Dask cluster (``distributed`` is imported there
only).
"""
