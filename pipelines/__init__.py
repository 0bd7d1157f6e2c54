"""Thin Apache Beam pipelines over `linnet_core`: options, IO, composite PTransforms, entry points."""
