"""Benchmarks of crowdstat against plain Python, vectorised NumPy, scikit-learn and crowd-kit (``make bench``)."""
