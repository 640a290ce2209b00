"""The shipped recipes (this folder is installed as reid_htg.recipes: `reid-train --config cuhk03_cpu`)."""
