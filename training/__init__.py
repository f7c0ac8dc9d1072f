"""Train, evaluate, gate and publish the Iris classifier (``python -m training``)."""
