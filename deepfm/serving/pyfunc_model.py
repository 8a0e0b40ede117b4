"""The script MLflow runs to rebuild the pyfunc model when it is loaded ("models from code"): the
model is code plus the model directory's files, and nothing is pickled."""

import mlflow

from deepfm.serving.pyfunc import DeepFMModel

mlflow.models.set_model(DeepFMModel())
