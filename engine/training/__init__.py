"""Training a run: one step in darknet's or Caffe's loop semantics (:mod:`engine.training.step`),
the session loop that yields events (:mod:`engine.training.session`,
:mod:`engine.training.events`), and the run folder it writes (:mod:`engine.training.runfolder`)."""
