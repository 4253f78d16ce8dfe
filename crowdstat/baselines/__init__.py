"""Baselines beside the paper's estimators (MATH.md): majority vote, Dawid-Skene EM, full Bayes."""
