"""Benchmark entry point (Hydra).

    python run.py                                              # thermolion on digits, rigorous
    python run.py -m optimizer=thermolion,adamw,lion dataset=mnist,fashionmnist seed=0,1,2
    python run.py -m +experiment=paper_table                   # 12 datasets x 9 optimizers
    python run.py protocol=paper dataset=mnist optimizer=adamw optimizer.lr=0.01

This file is the configuration boundary: the Hydra config becomes a plain ``RunConfig`` here and
nothing below imports Hydra.
"""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> str:
    from runners.config import ConfigError, RunConfig
    from runners.hydra_glue import record_status
    from runners.trainer import RunResult, train

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    try:
        result = train(RunConfig.from_dict(OmegaConf.to_container(cfg, resolve=True)))
    except ConfigError as err:
        result = RunResult(run_dir=hc.runtime.output_dir, status="failed", error=f"invalid config: {err}")
    print(result.line(), flush=True)
    if multirun:
        record_status(hc.sweep.dir, hc.job.num, {"status": result.status, "run_dir": str(result.run_dir),
                                                 "error": result.error, "final": result.final})
    elif result.status == "failed":
        sys.exit(1)
    return result.status


if __name__ == "__main__":
    main()
