"""Slow, obvious NumPy transcriptions of each kernel, layer and update rule (float64 where the
comparison needs it). Tests check the compiled kernels against these, and these against finite
differences."""
