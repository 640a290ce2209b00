"""Small helpers: training-curve plots, progress of long jobs."""
