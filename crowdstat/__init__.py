"""crowdstat: placeholder, filled in below."""
__version__ = "0.1.0"
