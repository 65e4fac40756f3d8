"""Batch segmentation of whole slides: ``Engine`` (engine.py), label pyramid and outlines in the
slide's own store (_output.py, outlines.py), ``iain infer`` / ``iain predict`` (__main__.py),
HTTP jobs (jobs.py, router.py), dask scale-out (distributed.py). Only this package and
``models/`` import torch; nothing is imported here so that ``inference.errors`` stays light.
"""
