"""Eager PyTorch implementations: the semantics of every op, and the "eager" baseline."""
