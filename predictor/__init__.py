"""Serve the published Iris model with KServe (``python -m predictor``)."""
