"""Processors that run projections and fan events out: in-process for the embedded backend."""
