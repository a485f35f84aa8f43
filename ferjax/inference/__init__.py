"""Applying a trained ferjax model: Predictor, face detection and cropping, video, export."""
