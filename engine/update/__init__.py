"""How weights move: the update rules over the flat buffers (:mod:`engine.update.rules`: darknet
SGD, Caffe's solvers), the learning rate as a pure function of the iteration
(:mod:`engine.update.schedule`), and training a config under the other framework's rule
(:mod:`engine.update.semantics`)."""
