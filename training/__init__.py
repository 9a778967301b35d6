"""Data sources, pretraining, fine-tuning, evaluation and reports for stacked-autoencoder classifiers."""
