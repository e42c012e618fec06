"""JEPA pipelines: I-JEPA and V-JEPA self-supervised training, frozen-feature probes, and an
action-conditioned predictor with a CEM planner in representation space."""
