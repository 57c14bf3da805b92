"""Private speed paths for FF training. Each computes what the autograd reference computes (the
local objective of ``fflab.objective`` through ``FFLayer.local_grad``), up to float rounding, and
each is checked against autograd in the tests.

One function per kind of run picks the path:
``supervised.supervised_engine`` (supervised FF, paper section 3.3) and
``recurrent_step.recurrent_engine`` (the recurrent net, section 4).

Modules: ``dense`` (hand-derived gradients for dense stacks; ``LabelledInput`` shares the first
layer's image product across the neutral, positive and negative passes), ``recurrent`` (the same
for the recurrent net, with its clamped inputs made once per step), ``products`` (the forward
product through oneDNN on CPU), ``update`` (optimizer steps merged with the engine's work),
``compiled`` (``torch.compile`` with a check for a C++ compiler).
"""
