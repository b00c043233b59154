"""maskgate build stage: train, evaluate and quantize the mask classifier (needs TensorFlow)."""
