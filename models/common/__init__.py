"""Shared model substrate for the pipelines (Genie, Sora-style DiT, JEPA).

Patching (models.common.patching), tokens are (B, T, S, C) with S row-major:
    patchify(video (B,T,C,H,W), patch, tubelet=1) -> (B, T/tubelet, S, tubelet*p*p*C)
    unpatchify(tokens, patch, height, width, tubelet=1) -> (B, T, C, H, W)
    PatchEmbed(patch, in_channels, dim, tubelet=1): video -> (B, T', S, dim)
    PatchHead(dim, patch, out_channels, tubelet=1): (tokens, H, W) -> video
Embeddings (models.common.embeddings), float32, fixed:
    sincos_1d(n or positions, dim) -> (N, dim);  sincos_2d(h, w, dim) -> (h*w, dim)
    sincos_3d(t, h, w, dim) -> (t, h*w, dim), broadcastable onto (B, T, S, C)
    timestep_embedding(t (B,), dim) -> (B, dim);  TimestepEmbedder(dim, frequency_dim, scale)
ST transformer (models.common.st_transformer):
    STTransformer(dim, depth, heads, causal_time=True, mlp_ratio=4, qk_norm=True,
                  rope=False, backend=None, cond_dim=None)
    forward(x (B,T,S,dim), cond=None (B,T,cond_dim), cache=None) -> (B,T,S,dim)
    make_cache(batch, max_frames, tokens_per_frame) -> wmkernels.nn.TemporalKVCache
Training (models.common.training):
    TrainConfig(steps, log_every, eval_every, checkpoint_every, out_dir, seed, grad_clip,
                resume, progress)
    Trainer(model, optimizer, loss_fn(model, batch), batch_fn(step), config, eval_fn=None,
            scheduler=None, configs={"model": cfg}).fit() -> history
    save_checkpoint / load_checkpoint (safetensors, atomic, optimizer+scheduler+RNG+step,
    a checksum of the tensors checked on load; a resume with other configs is refused),
    save_config / load_config, config_to_dict / config_from_dict(cls, dict) (JSON <->
    dataclass, e.g. to rebuild a model from a checkpoint's configs), seed_everything
    (call it before building the model: the Trainer reseeds only after the model exists)
Optimisation (models.common.optim):
    adamw(params, lr, weight_decay, betas) (no decay on vectors); warmup_cosine(step,
    warmup, total, floor, peak) -> lr or multiplier; warmup_cosine_lambda(optimizer, ...)
Distributed (models.common.distributed), for `torchrun --nproc_per_node=N`:
    init_distributed(backend=None, device=None) -> DistInfo; cleanup(info); wrap_ddp(model,
    info); unwrap(model); make_loader(dataset, batch_size, info, shuffle, seed) (a
    DistributedSampler shard per rank); step_batches(loader) -> batch_fn(step);
    rank_rows(draw, rows, info) (a rank's share of a global batch's random draw);
    rank_mean(tensor, info); all_reduce_mean; barrier; get_rank; get_world_size;
    is_main_process; rank0_logger
"""

from wmkernels.models.common.distributed import (
    DistInfo,
    all_reduce_mean,
    barrier,
    cleanup,
    get_rank,
    get_world_size,
    init_distributed,
    is_main_process,
    make_loader,
    rank0_logger,
    rank_mean,
    rank_rows,
    step_batches,
    unwrap,
    wrap_ddp,
)
from wmkernels.models.common.embeddings import (
    TimestepEmbedder,
    sincos_1d,
    sincos_2d,
    sincos_3d,
    timestep_embedding,
)
from wmkernels.models.common.optim import adamw, warmup_cosine, warmup_cosine_lambda
from wmkernels.models.common.patching import PatchEmbed, PatchHead, patchify, unpatchify
from wmkernels.models.common.st_transformer import STTransformer
from wmkernels.models.common.training import (
    TrainConfig,
    Trainer,
    config_from_dict,
    config_to_dict,
    load_checkpoint,
    load_config,
    save_checkpoint,
    save_config,
    seed_everything,
)

__all__ = [
    "DistInfo", "PatchEmbed", "PatchHead", "STTransformer", "TimestepEmbedder", "TrainConfig",
    "Trainer", "adamw", "all_reduce_mean", "barrier", "cleanup", "config_from_dict",
    "config_to_dict", "get_rank", "get_world_size", "init_distributed", "is_main_process",
    "load_checkpoint", "load_config", "make_loader", "patchify", "rank0_logger", "rank_mean",
    "rank_rows", "save_checkpoint", "save_config", "seed_everything", "sincos_1d", "sincos_2d",
    "sincos_3d", "step_batches", "timestep_embedding", "unpatchify", "unwrap",
    "warmup_cosine", "warmup_cosine_lambda", "wrap_ddp",
]
