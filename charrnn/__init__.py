"""charrnn: character-level RNN, LSTM and GRU language models on JAX.

Modules: `cells` (the RNN, LSTM and GRU equations), `model` (embedding, stacked layers, head, loss), `data` (corpus,
vocabulary, splits, streams), `train` (optimizer, jitted step, loop), `sample` (jitted generation),
`checkpoint` (safetensors, atomic), `memory` (malloc settings for XLA's buffers), `launch` (what the command
sets up before JAX starts), `cli` (the command line). Importing this package does not import JAX.
"""

__version__ = "0.1.0"
