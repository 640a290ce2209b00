"""The experiment arms of benchmarks/paired.py (installed as reid_htg.recipes.arms)."""
