"""Genie (Bruce et al. 2024): a generative interactive environment learned from unlabeled
video, on wmkernels.

Components (one module each, named as in the paper):
    VideoTokenizer      ST-ViViT VQ-VAE, causal in time; a patch whose pixels did not
                        change keeps its latent (a training term) (tokenizer.py)
    LatentActionModel   infers one of 8 latent actions per transition (lam.py)
    DynamicsModel       MaskGIT ST-transformer over codes, actions as additive embeddings,
                        mask rate ~ U(0.5, 1), QK-norm (dynamics.py)
    Genie               the three together, safetensors checkpoints (model.py)

Training (the phases: train.py; the whole run, `train_genie`: pipeline.py): tokenizer and
LAM from pixels (side by side in two processes on a CPU); then the dynamics on the frozen
tokenizer's codes and LAM's actions. The demo (demo.py) trains, evaluates and plays.
Play (play.py): prompt frame(s) + latent actions -> frames; MaskGIT over the newest frame
only, past frames' temporal keys/values served from `wmkernels.nn.TemporalKVCache`.
Evaluation (evaluate.py, metrics.py): tokenizer PSNR, ΔtPSNR controllability (t = 4),
latent/true action NMI, generation frames/s with wmkernels + cache vs the eager reference;
and what a viewer sees in every generated frame of a rollout from the real first frame:
PSNR with inferred and with random actions beside copying the first frame, whether the
agent is one blob, how far its centroid is from the real one, and the dynamics'
teacher-forced next-frame token accuracy.

Command line (cli.py): `wmk genie train --config tiny`, `wmk genie play --checkpoint PATH
--actions 1,1,3,0`, `wmk genie eval --checkpoint PATH` (`--maskgit-steps`, `--temperature`,
`--choice-temperature` decode it under other sampler settings), `wmk demo`.
Diagnosis: `python -m wmkernels.models.genie.diagnose CHECKPOINT` (what the tokenizer and
LAM allow, read without generating) and `python -m wmkernels.models.genie.ablate CHECKPOINT
--set FIELD=VALUE --out DIR` (the dynamics phase alone with a setting changed, after the
tokenizer's if it is a `tokenizer.` setting, evaluated as the demo does); the tables they
produced are in models/genie/RESULTS.md.
"""

from wmkernels.models.genie.config import GenieConfig, get_config
from wmkernels.models.genie.model import Genie, load_checkpoint, save_checkpoint
from wmkernels.models.genie.play import play

__all__ = ["Genie", "GenieConfig", "get_config", "load_checkpoint", "play", "save_checkpoint"]
