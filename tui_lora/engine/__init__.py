"""The training process: model, quantisation, LoRA, Trainer, callbacks -> events.

Importing this package is cheap; the heavy libraries load inside `execute`.
"""
