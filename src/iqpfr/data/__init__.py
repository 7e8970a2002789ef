"""Training and test data: blind degradations, image files, datasets."""
