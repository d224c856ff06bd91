"""Parameter files: darknet ``.weights`` and ``.npz`` (:mod:`engine.formats.weights`), Caffe's
``.caffemodel`` (:mod:`engine.formats.caffemodel`) and the protobuf wire codec under it and under
LMDB's ``Datum`` records (:mod:`engine.formats.protobuf_wire`)."""
