"""Slim world-model pipelines built on the wmkernels public API."""
