"""Layer 2: the data: the Kaggle layout and its images, boxes and the resize to the model's input, folds, the generated dataset."""
