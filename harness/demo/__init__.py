"""The built-in demo models: two small transformer classifiers trained on the bearing-fault task."""
