"""``dnupdate bench``: the workloads and settings (:mod:`engine.bench.workloads`), the timed step
functions (:mod:`engine.bench.runner`, :mod:`engine.bench.torch_twin` for PyTorch), the worker
process that runs them (:mod:`engine.bench.worker`) and the measurement that drives the workers
(:mod:`engine.bench.measure`). Imports point one way: measure → worker → runner/twin →
workloads."""
