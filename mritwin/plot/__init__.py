"""Matplotlib figures: sequence diagrams, k-space, images and parameter maps.

Imported lazily by users (`import mritwin.plot`); the core never imports matplotlib.
"""
