"""Data tools for people: exploration (sizes, duplicates) and the outlier screen."""
