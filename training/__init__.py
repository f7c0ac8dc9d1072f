"""Train, evaluate, gate and publish a classifier (``python -m training``)."""
