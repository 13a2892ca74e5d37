"""Parameterized clinical sequences (`mritwin.sequences`)."""
