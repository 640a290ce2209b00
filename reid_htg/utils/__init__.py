"""Small helpers: training-curve and result plots, progress of long jobs, file and weight fingerprints, a readers-writer lock."""
