"""LinNét core library: taxonomy, records, features, encoders, model, decoding, thresholds, metrics.

Plain Python, numpy, TensorFlow and torch; never Apache Beam (pipelines depend on this, not back).
"""

__version__ = "0.1.0"
