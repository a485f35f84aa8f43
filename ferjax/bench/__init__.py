"""Training and input-pipeline throughput of ferjax, side by side with PyTorch.

`python -m ferjax.bench --model=resnet50 [--torch] [--input]`: see
docs/benchmarks.md for what each figure means.
"""
