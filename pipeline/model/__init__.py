"""The classifier: features, candidates, training and calibration, the model folder, MLflow tracking."""
