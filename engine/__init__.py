"""The dnupdate engine: a config becomes a spec, the spec a model, the model is trained by update
rules in a loop that yields events. It never prints; ``cli/`` renders what it yields.

Stages, each building only on those before it (``tests/test_architecture.py`` checks the order):

* :mod:`engine.spec`, :mod:`engine.rng` — what every stage shares: the frozen spec dataclasses
  (``RunSpec`` …) and glibc-exact randomness;
* :mod:`engine.backends` — the kernels (CPU ``@njit``, CUDA) behind one ``Backend`` interface;
* :mod:`engine.model` — shapes, initialisation, layers and the network over flat buffers;
* :mod:`engine.formats` — parameter files: darknet ``.weights``, ``.npz``, ``.caffemodel``;
* :mod:`engine.data` — dataset readers, the download cache, batches;
* :mod:`engine.config` — darknet and Caffe readers → ``RunSpec`` (the only foreign key names);
* :mod:`engine.update` — update rules, learning-rate schedules, ``--semantics``;
* :mod:`engine.training` — one step, the session loop and its events, the run folder;
* :mod:`engine.bench` — benchmark workloads, the measuring worker, the PyTorch twin.
"""
