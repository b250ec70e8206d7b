"""Training and using a Seq2Seq model: the application built on the library.

    from fast_s2s.training import TrainSettings, Translator, train

    result = train(TrainSettings(task="dates"), dict(hidden_size=128), "dates.pt")
    print(Translator.from_checkpoint("dates.pt").translate(["03/03/98"])[0].output)

Files: data.py (TrainSettings, loading and encoding the pairs), trainer.py (the loop),
optimizer.py (Adam, fused where torch can), evaluation.py (decode and score), metrics.py (PER
and WER), g2p.py (the g2p task's defaults and scoring), g2p_peer.py (Phonetisaurus trained and
scored on the same split), checkpoint.py (atomic save, checked load), memory.py (whether a
search or a training run fits in memory), distributed.py (DDP helpers), translator.py (a
checkpoint ready to decode), plotting.py (attention heat maps and the experiment's curves),
length_experiment.py (classic vs attention by source length). The command line over these is
fast_s2s.cli. Nothing in the library (ops, nn, models, data) imports this package.
"""

from fast_s2s.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from fast_s2s.training.data import PreparedData, TrainSettings, prepare_data, uses_frames
from fast_s2s.training.evaluation import evaluate, translate_examples
from fast_s2s.training.trainer import TrainResult, train
from fast_s2s.training.translator import Translation, Translator

__all__ = [
    "CheckpointError",
    "PreparedData",
    "TrainResult",
    "TrainSettings",
    "Translation",
    "Translator",
    "evaluate",
    "load_checkpoint",
    "prepare_data",
    "save_checkpoint",
    "train",
    "translate_examples",
    "uses_frames",
]
