"""charrnn: character-level RNN, LSTM and GRU language models on JAX.

Importing this package imports no JAX and changes no process state (no environment variable, no malloc setting,
no global flag); each module below is imported when used. The `charrnn` command applies its malloc and device
settings at start; a Python user gets them with one call, `charrnn.launch.configure_process()`.

Modules (docs/layout.md; the API in docs/python-api.md):

    text           files -> characters -> token ids: Vocabulary, Corpus, CorpusInfo, token_dtype, CorpusError
    corpus_cache   corpora larger than memory: encoded once into a file of ids, then memory-mapped
    data           load_corpus, the bundled corpus, contiguous splits, the truncated-BPTT windows (plan, Layout)
    synthetic      the generator of the bundled corpus, which knows the structure of every character
    config         frozen ModelConfig and TrainConfig, each round-tripping through a dict; ConfigError
    cells          the RNN, LSTM and GRU equations behind one Cell interface (init, initial_carry, step), scan
    fused          the fast training path: the same equations with a hand-written backward pass, and
                   its products in bfloat16 on request (mixed precision)
    model          embedding -> stacked layers -> head: init, forward, loss, position_nll, step
    optim          the optimizer and its learning-rate schedule, as optax pieces
    sizing         the width and precision a time budget affords on this machine: measure_speed,
                   fit_precision, width_for_time, fit_width
    steps          TrainState and the builders of the jitted train step; to and from a checkpoint
    validation     the loss over a whole split: make_evaluate, Validator
    train          the training loop: train, and the Trainer that keeps its bookkeeping
    runs           a run prepared and resumed as the command does it: prepare, choose_out_dir, train
    runlog         training's events and their records: run.json, metrics.jsonl
    checkpoint     safetensors checkpoints, atomic and checksummed: save, load, load_params, resolve
    files          atomic writes (temporary file, fsync, rename)
    units          nats and bits per character: bpc
    sample         jitted generation with temperature and top-k, streamed in chunks
    features       per-character features of a text: quotes, brackets, column, comments, regexes
    inspection     recording units, scoring them against features, ablation, saturation, gradient reach
    scoring        Unit, and the rank statistics that score a unit against a feature (AUROC, Spearman)
    probes         linear probes: is a feature held by one unit or spread over many
    explore        the self-contained interactive page of `charrnn explore`
    evaluation     what `charrnn evaluate` measures: test loss, n-gram baselines, long-range accuracy, errors
    ngram          character n-gram models with interpolated Kneser-Ney smoothing
    bidirectional  bidirectional recurrent layers
    rtrl           real-time recurrent learning: the exact gradient computed forward in time
    distributed    data parallelism over many devices and processes: Placement, initialize
    launch         what the command sets up at start; configure_process for a Python user
    memory         glibc malloc settings for XLA's large buffers
    report         summaries of runs and checkpoints, for `charrnn report` and `charrnn info`
    render         terminal renderings with rich
    html           self-contained HTML pages: inline CSS and SVG, no scripts
    cli            the command line, one module per command
"""

__version__ = "0.1.0"
