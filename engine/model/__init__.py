"""The network and what it is made of: output shapes (:mod:`engine.model.shapes`), blob naming
(:mod:`engine.model.blobs`), initialisation as darknet and Caffe draw it
(:mod:`engine.model.initialisation`), the layers (:mod:`engine.model.layers`) and the network
over one flat parameter buffer (:mod:`engine.model.network`)."""
