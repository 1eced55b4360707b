"""TrackStar training-data attribution engine and Dagster pipeline."""
