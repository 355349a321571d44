"""mtsweep's orchestrator: the command line, sweeps (Optuna + Ray Tune), tracking (MLflow)."""
