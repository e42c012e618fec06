"""Slim world-model pipelines built on wmkernels' public API (installed as wmkernels.models).

data     the embedded synthetic world and real-video loading (one dataset API)
common   shared model substrate: patching, embeddings, ST transformer, training, DDP
genie, sora, jepa   the pipelines
"""
