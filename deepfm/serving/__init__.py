"""Applying a trained model version outside training.

inference     Arrow batches to probabilities in Spark's Python workers (the score and evaluate jobs)
export        TorchScript, checked against the eager model
pyfunc        the MLflow pyfunc model: raw rows in a pandas frame to probabilities
pyfunc_model  the script MLflow runs to rebuild it ("models from code": nothing pickled)
"""
