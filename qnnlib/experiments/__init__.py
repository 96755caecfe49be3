"""Named experiments, the per-epoch measurement loop, and recorded results (Chapters 6–10).

Eight modules, one concept each:

* ``configs`` — :class:`ExperimentConfig`, the named ``CONFIGS``, fast mode, config checks;
* ``measure`` — what is measured after every epoch (feature space, PGD, Δx, Δp, t-SNE
  snapshots) and on the final model (the stronger attack over the ε sweep);
* ``store`` — a run's folder: its files, its lock, the write order and its invariants;
* ``runner`` — running (and resuming) an experiment: epochs, checkpoints, results files, the
  exported weights, ``redo_final``;
* ``recorded`` — recorded results as the book reads them (local, downloaded or run on demand);
* ``fragility_runs`` — Chapter 10's recorded fragility tables: their named configs, the fixed
  image set, the chunked, resumable computation from a recorded network;
* ``fragility_record`` — a fragility table's results file: schema, reading, summary;
* ``defence_run`` — Chapter 10's recorded defence test (masking the most coupled inputs): config,
  resumable computation, results file, reader.

Every name the book, the tests and the tools use is re-exported here, so ``experiments.run``,
``experiments.recorded(...)`` … keep working. Note that ``experiments.recorded`` is the function;
the module is ``importlib.import_module("qnnlib.experiments.recorded")``.
"""

from .configs import (
    CONFIGS, FAST, MODELS, RESULTS_DIR, ROOT, RUNS_DIR, ExperimentConfig, allowed, build_model, config_of,
    configure, describe, make_config,
)
from .measure import (
    FeatureSpace, _features, _generator, evaluation_subset, feature_space, final_evaluation, measure_epoch,
    label_summary, logit_scale, space_summary, strong_robust_accuracy,
)
from .store import RunFiles, RunLocked
from .runner import _datasets, _device, add_feature_scale, export_weights, redo_final, run
from .recorded import (
    RECORDED_MINUTES, RECORDED_SUFFIXES, RESULTS_URL_ENV, TRAINING_MARKER, RecordedRun, RecordedRunUnavailable,
    _recorded, _recorded_path, book_runs, book_runs_note, data_check, feature_space_of, final_model, how_to_compute,
    in_checkout,
    load_or_run, load_snapshots, recorded, reliable_epochs, show, weights_path,
)
from .fragility_record import FragilityRun, is_fragility, load_fragility, read_fragility, show_fragility
from .fragility_runs import (
    FRAGILITY_CONFIGS, FRAGILITY_FAST, FragilityConfig, configure_fragility, describe_fragility, recorded_fragility,
    run_fragility, select_images,
)
from .defence_run import (
    DEFENCE_CONFIGS, DefenceConfig, DefenceRun, configure_defence, describe_defence, is_defence, load_defence,
    recorded_defence, run_defence, show_defence,
)

__all__ = [
    "CONFIGS", "FAST", "MODELS", "RESULTS_DIR", "ROOT", "RUNS_DIR", "ExperimentConfig", "build_model", "config_of",
    "describe", "make_config", "configure", "allowed", "RunFiles", "RunLocked", "FeatureSpace", "evaluation_subset", "export_weights", "feature_space",
    "final_evaluation", "label_summary", "logit_scale", "measure_epoch", "redo_final", "run", "space_summary", "strong_robust_accuracy",
    "RECORDED_SUFFIXES", "RESULTS_URL_ENV", "RecordedRun", "book_runs", "book_runs_note", "final_model",
    "load_or_run", "load_snapshots", "recorded", "show", "weights_path", "RECORDED_MINUTES", "TRAINING_MARKER",
    "RecordedRunUnavailable", "data_check", "how_to_compute", "in_checkout", "reliable_epochs",
    "add_feature_scale", "feature_space_of",
    "FRAGILITY_CONFIGS", "FRAGILITY_FAST", "FragilityConfig", "FragilityRun", "configure_fragility",
    "describe_fragility", "is_fragility", "load_fragility", "read_fragility", "recorded_fragility", "run_fragility",
    "select_images",
    "show_fragility",
    "DEFENCE_CONFIGS", "DefenceConfig", "DefenceRun", "configure_defence", "describe_defence", "is_defence",
    "load_defence", "recorded_defence", "run_defence", "show_defence",
]
