"""The one trainer: LoRA fine-tuning and DreamBooth (LoRA or full) on Stable Diffusion 1.x and SDXL, on accelerate.

    result = train(TrainConfig(mode="lora", data="data/train/lora", output="outputs/lora", profile="tiny"))
    result = train(TrainConfig(mode="lora", data="data/train/lora", output="outputs/xl", profile="tiny",
                               base="tiny:sdxl"))

One optimizer step (`train_step`): images -> VAE latents -> noise at a random timestep -> the UNet predicts the
noise -> mean squared error (objective.denoising_loss; plus the prior loss in DreamBooth) -> backward -> AdamW. `start_run` builds what a run
holds; `train` adds resuming, records, checkpoints and the outputs around them. The same function runs in a
notebook, from `nbhelpers train`, and under `accelerate launch` / `torchrun` on several processes (DDP).

SDXL differs in what conditions the UNet (`TextEncoder`, `size_conditioning`): the hidden states of two text encoders
side by side, the second encoder's pooled vector, and six numbers per image (original size, crop corner, target
size). With frozen text encoders every prompt is encoded once before training and the encoders leave the GPU.

Why runs are reproducible to the bit on a CPU: every example's noise, timestep and VAE sample come from a generator
seeded by its position in the data stream (see data.py), not from a global RNG. A resumed run reloads weights,
optimizer and scheduler, skips the batches already seen, and so draws exactly what the long run would have drawn.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from nbhelpers.train import checkpoints, data, divergence, export, objective, priors, targets
from nbhelpers.train.conditioning import TextEncoder, size_conditioning  # noqa: F401 (size_conditioning: tests)
from nbhelpers.train.config import TEXT_TARGETS, TrainConfig

KEY_STRIDE = 1_000_003  # separates the generator seeds of different runs' seeds
# The clock of the per-step "seconds" in the loss records. benchmarks/bench_train_step.py swaps in the process's
# CPU clock, which other work on a shared machine disturbs less.
STEP_CLOCK = time.perf_counter


@dataclass
class TrainResult:
    output: Path
    files: dict = field(default_factory=dict)
    losses: list = field(default_factory=list)  # per optimizer step: step, loss, lr, seconds (+ instance, prior)
    resumed_from: int = 0
    seconds: float = 0.0
    config: TrainConfig | None = None

    @property
    def lora(self) -> Path | None:
        return self.files.get("lora")


def train(config: TrainConfig) -> TrainResult:
    """Check everything, then train. Bad input raises ParameterError before any model is loaded."""
    config = config.resolved()
    start = checkpoints.plan_start(config)
    if start.kind == "finished":
        print(f"{config.output} already holds this finished run: returning it (nothing retrained).")
        return finished_result(config)
    check_before_loading(config)
    instances = data.load_folder(config.data, config.resolution, instance_prompt=config.instance_prompt,
                                 use_captions=config.mode == "lora")
    created = not Path(config.output).exists()
    try:
        with deterministic_on_cpu():
            return _train(config, start, instances)
    except BaseException:
        if created:
            forget_empty_run(config.output)
        raise
    finally:
        release_accelerate_state()


def check_before_loading(config: TrainConfig) -> None:
    """The cheap checks that used to fail only after the model had loaded: where results go, where class images
    are cached, which layers the LoRA targets."""
    from nbhelpers import persist

    persist.check_writable(config.output, "output")
    if config.prior_preservation:
        persist.check_writable(class_root(config), "class_data")
    if not config.full_finetune:
        targets.check(config.target_modules)


def forget_empty_run(output) -> None:
    """A run that this call started in a new folder and that stopped before its first checkpoint leaves nothing
    behind: its run.json would only block the next attempt ("holds another run")."""
    import shutil

    output = Path(output)
    if output.is_dir() and not checkpoints.complete(output):
        shutil.rmtree(output, ignore_errors=True)


def launch(config: TrainConfig, num_processes: int | None = None) -> TrainResult:
    """Train on every GPU of this machine from a notebook (Kaggle: two T4s): accelerate's notebook_launcher starts
    one process per GPU running `train`. Call it before anything in the kernel touches CUDA (the processes are
    forked and cannot share an initialised GPU). On a CPU it runs `num_processes` gloo processes."""
    import torch
    from accelerate import notebook_launcher

    config = config.resolved()
    checkpoints.plan_start(config)  # bad input is reported here, once, not by every process
    count = num_processes or max(1, torch.cuda.device_count())
    notebook_launcher(train, (config,), num_processes=count)
    return finished_result(config)


def finished_result(config: TrainConfig) -> TrainResult:
    import json

    output = Path(config.output)
    names = {"lora": export.LORA_FILE, "kohya": export.KOHYA_FILE, "unet": "unet", "card": export.CARD_FILE,
             "losses": "losses.json"}
    files = {key: output / name for key, name in names.items() if (output / name).exists()}
    record = checkpoints.read_run(output) or {}
    if record.get("class_images"):
        files["class_images"] = Path(record["class_images"])
    return TrainResult(output, files, json.loads((output / "losses.json").read_text()),
                       seconds=record.get("seconds", 0.0), config=config)


def _train(config: TrainConfig, start, instances) -> TrainResult:
    from tqdm.auto import tqdm

    began = time.perf_counter()
    accelerator = make_accelerator(config)
    accelerator.wait_for_everyone()  # every process has checked the output folder before anyone writes to it
    output = Path(config.output)
    if accelerator.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
        checkpoints.write_run(output, config)
    run = start_run(config, accelerator, instances)

    step, losses = 0, []
    if start.kind == "resume":
        state = checkpoints.load(accelerator, start.checkpoint)
        step, losses = state["step"], state["losses"]
        run.loader = accelerator.skip_first_batches(run.loader, step * config.gradient_accumulation)
        accelerator.print(f"Resumed from {start.checkpoint} at step {step}.")
    resumed_from = step

    bar = tqdm(total=config.steps, initial=step, desc=f"training {config.mode}",
               disable=not (config.progress and accelerator.is_local_main_process))
    tick = STEP_CLOCK()
    for batch in run.loader:
        mean = train_step(run, batch)
        if mean is None:  # a micro-batch of gradient accumulation: no optimizer step yet
            continue
        step += 1
        record = {"step": step, "loss": mean[0], "lr": run.lr_scheduler.get_last_lr()[0],
                  "seconds": round(STEP_CLOCK() - tick, 5)}
        if config.prior_preservation:
            record.update(instance=mean[1], prior=mean[2])
        divergence.check_loss(config, step, mean[0], output)
        losses.append(record)
        bar.update(1)
        bar.set_postfix(loss=f"{mean[0]:.4f}")
        if step % config.checkpoint_every == 0 and step < config.steps:
            divergence.check_weights(config, step, run.params, output)  # every checkpoint on disk is finite
            checkpoints.save(accelerator, output, step, {"losses": losses, "settings": config.settings()},
                             config.keep_checkpoints)
        if config.validation_every and step % config.validation_every == 0 and accelerator.is_main_process:
            with run.encoder.on_device(accelerator.device):
                validation_images(config, run.pipe, output / "validation" / f"step-{step:08d}.png", accelerator,
                                  default_prompt=instances.prompts[0])
        if step >= config.steps:
            break
        tick = STEP_CLOCK()  # checkpoints and validation are not part of a step's time
    bar.close()
    divergence.check_weights(config, step, run.params, output)  # nothing NaN is exported

    accelerator.wait_for_everyone()
    result = TrainResult(output, {}, losses, resumed_from, time.perf_counter() - began, config)
    if accelerator.is_main_process:
        models = {name: accelerator.unwrap_model(model) for name, model in run.models.items()}
        result.files = export.write_outputs(output, models["unet"], models, config, run.source, losses,
                                            result.seconds)
        if run.classes is not None:
            result.files["class_images"] = run.classes.files[0].parent
        checkpoints.write_run(output, config, finished=True, seconds=round(result.seconds, 2),
                              class_images=str(result.files.get("class_images", "")))
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return result


def make_accelerator(config: TrainConfig):
    import torch
    from accelerate import Accelerator

    return Accelerator(mixed_precision=config.mixed_precision, cpu=not torch.cuda.is_available(),
                       gradient_accumulation_steps=config.gradient_accumulation,
                       step_scheduler_with_optimizer=False)  # one scheduler step per optimizer step


@dataclass
class Run:
    """The live objects of one training run: built by `start_run`, advanced one batch at a time by `train_step`."""

    config: TrainConfig
    accelerator: object
    pipe: object
    source: str
    models: dict  # "unet" (and "text_encoder"), as prepared by accelerate
    params: list  # the trainable parameters
    optimizer: object
    loader: object
    lr_scheduler: object
    encoder: "TextEncoder"
    noise_scheduler: object
    latent_shape: tuple
    classes: object  # the class images (DreamBooth with prior preservation), else None
    running: object  # the losses of the micro-batches of the current optimizer step


def start_run(config: TrainConfig, accelerator, instances) -> Run:
    """Load the base model, add the trainable weights, and prepare models, optimizer, data and schedule."""
    import torch
    from accelerate.utils import set_seed
    from diffusers.optimization import get_scheduler

    with accelerator.main_process_first():  # the first process builds or downloads the model; the others reuse it
        pipe, source = load_base(config, accelerator)
    classes = class_images(config, pipe, source, accelerator) if config.prior_preservation else None
    encoder = TextEncoder(pipe, config.train_text_encoder, config.family)
    if not config.train_text_encoder:  # frozen: every prompt once, then the encoders leave the GPU
        encoder.precompute(instances.prompts + (classes.prompts if classes is not None else []), accelerator.device)
        encoder.offload()

    set_seed(config.seed)  # the LoRA's initial weights
    trainable = add_trainable_weights(config, pipe)
    params = [p for model in trainable.values() for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(config, params)
    global_batch = config.batch_size * accelerator.num_processes
    stream = data.TrainingStream(instances, config.steps * config.gradient_accumulation * global_batch, config.seed,
                                 classes)
    if config.cache_latents:
        per_call = data.encode_batch(config.resolution)
        stream.instances.images = encode_all(pipe.vae, stream.instances.images, per_call)
        if classes is not None:
            stream.classes.images = encode_all(pipe.vae, stream.classes.images, per_call)
    loader = torch.utils.data.DataLoader(stream, batch_size=config.batch_size, shuffle=False, collate_fn=data.collate)
    lr_scheduler = get_scheduler(config.lr_scheduler, optimizer, num_warmup_steps=config.warmup_steps,
                                 num_training_steps=config.steps)
    names = list(trainable)
    prepared = accelerator.prepare(*trainable.values(), optimizer, loader, lr_scheduler)
    models = dict(zip(names, prepared[:len(names)]))
    optimizer, loader, lr_scheduler = prepared[len(names):]
    checkpoints.keep_only_trainable_weights(accelerator)
    for model in models.values():
        model.train()
    latent_shape = (pipe.vae.config.latent_channels, config.resolution // 8, config.resolution // 8)
    return Run(config, accelerator, pipe, source, models, params, optimizer, loader, lr_scheduler,
               encoder, _training_scheduler(pipe), latent_shape, classes, torch.zeros(3, device=accelerator.device))


def train_step(run: Run, batch) -> list[float] | None:
    """Forward and backward on one batch. After the last micro-batch of an optimizer step (every batch without
    gradient accumulation): clip, step, and return [loss, instance loss, prior loss] averaged over the micro-batches
    and processes; None before that."""
    import torch

    config, accelerator = run.config, run.accelerator
    with accelerator.accumulate(*run.models.values()):
        loss, instance_loss, prior_loss = step_loss(config, batch, run.pipe, run.models, run.encoder,
                                                    run.noise_scheduler, run.latent_shape, accelerator)
        accelerator.backward(loss)
        if accelerator.sync_gradients:
            accelerator.clip_grad_norm_(run.params, config.max_grad_norm)
        run.optimizer.step()  # accelerate's wrapper skips the step until the last micro-batch
        run.optimizer.zero_grad(set_to_none=True)
    losses = torch.stack([loss.detach(), instance_loss.detach(), prior_loss.detach()])
    run.running += losses / config.gradient_accumulation
    if not accelerator.sync_gradients:
        return None
    run.lr_scheduler.step()
    mean = accelerator.reduce(run.running, reduction="mean").tolist()
    run.running.zero_()
    return mean


def load_base(config: TrainConfig, accelerator):
    """The base pipeline (config.base_model) on this process's device, frozen."""
    import torch
    from nbhelpers import loaders

    spec = config.base_model.spec
    pipe = loaders.load_diffusion(config.profile, spec=spec)
    pipe.to(accelerator.device)
    for module in frozen_modules(pipe):
        module.requires_grad_(False)
    if config.mixed_precision == "no" and pipe.unet.dtype != torch.float32:  # no autocast: float32 weights
        pipe.to(dtype=torch.float32)
    if getattr(pipe.vae.config, "force_upcast", False) and pipe.vae.dtype != torch.float32:
        pipe.vae.to(torch.float32)  # SDXL's original VAE overflows in fp16 (the fp16-fix VAE does not)
    return pipe, spec.source


def frozen_modules(pipe) -> list:
    return [m for m in (pipe.unet, pipe.vae, pipe.text_encoder, getattr(pipe, "text_encoder_2", None)) if m is not None]


def class_images(config: TrainConfig, pipe, source: str, accelerator) -> data.ImageSet:
    """Generate the missing class images on the main process (the others wait), then every process reads them."""
    from nbhelpers import loaders

    root = class_root(config)
    spec = config.base_model.spec
    key = priors.model_key(loaders.resolve_source(spec) if spec.is_offline else source)
    folder = priors.class_folder(root, config.class_prompt, key, config.resolution, config.class_image_steps)
    paths = [folder / priors.CLASS_FILE.format(i) for i in range(config.num_class_images)]
    if accelerator.is_main_process:
        paths = priors.ensure_class_images(pipe, config.class_prompt, config.num_class_images, folder,
                                           seed=config.seed, resolution=config.resolution,
                                           steps=config.class_image_steps, progress=config.progress)
    accelerator.wait_for_everyone()
    return data.load_images(paths, config.resolution, config.class_prompt)


def class_root(config: TrainConfig) -> Path:
    return Path(config.class_data) if config.class_data else Path(config.output).parent / "class_images"


def add_trainable_weights(config: TrainConfig, pipe) -> dict:
    """LoRA adapters (trainable, float32) on the frozen UNet and optionally the text encoder; or, for a full
    fine-tune, the whole UNet in float32 (fp16 weights cannot take fp16 gradient steps)."""
    import torch
    from peft import LoraConfig, inject_adapter_in_model

    trainable = {"unet": pipe.unet}
    if config.full_finetune:
        pipe.unet.to(torch.float32).requires_grad_(True)
    else:
        pipe.unet.add_adapter(LoraConfig(r=config.rank, lora_alpha=config.lora_alpha, init_lora_weights="gaussian",
                                         target_modules=list(config.target_modules)))
    if config.train_text_encoder:  # both of SDXL's encoders
        for name in TextEncoder.names(config.family):
            # peft directly: transformers' own add_adapter wants a newer peft than Colab ships (0.20).
            inject_adapter_in_model(LoraConfig(r=config.rank, lora_alpha=config.lora_alpha, init_lora_weights="gaussian",
                                               target_modules=list(TEXT_TARGETS)), getattr(pipe, name))
            trainable[name] = getattr(pipe, name)
    for model in trainable.values():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.data = parameter.data.float()
        if config.gradient_checkpointing:
            if hasattr(model, "enable_gradient_checkpointing"):
                model.enable_gradient_checkpointing()
            else:
                model.gradient_checkpointing_enable()
    return trainable


def make_optimizer(config: TrainConfig, params):
    """8-bit AdamW (bitsandbytes) on CUDA when asked and installed: optimizer state in a quarter of the memory,
    about 6 GB saved on a full SD 1.5 fine-tune. Plain torch AdamW everywhere else."""
    import torch

    if config.use_8bit_adam:
        try:
            if not torch.cuda.is_available():
                raise ImportError("no CUDA device")
            import bitsandbytes

            return bitsandbytes.optim.AdamW8bit(params, lr=config.learning_rate)
        except ImportError as why:
            print(f"8-bit AdamW unavailable ({why}): using torch AdamW. On a GPU: pip install bitsandbytes.")
    return torch.optim.AdamW(params, lr=config.learning_rate)


def encode_all(vae, images, batch_size: int = 8) -> list:
    """Cached latents: each image's latent distribution (mean and std stacked on channels), computed once."""
    import torch

    out = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            pixels = data.to_model_range(torch.stack(images[start:start + batch_size])).to(vae.device, vae.dtype)
            dist = vae.encode(pixels).latent_dist
            out.extend(torch.cat([dist.mean, dist.std], dim=1).float().cpu())
    return out


def example_randomness(keys, latent_shape, num_timesteps: int, seed: int):
    """For each example: its VAE sample, its noise and its timestep, from a generator seeded by its stream key."""
    import torch

    vae_eps, noise, timesteps = [], [], []
    for key in keys.tolist():
        generator = torch.Generator().manual_seed(seed * KEY_STRIDE + key)
        vae_eps.append(torch.randn(latent_shape, generator=generator))
        noise.append(torch.randn(latent_shape, generator=generator))
        timesteps.append(torch.randint(0, num_timesteps, (), generator=generator))
    return torch.stack(vae_eps), torch.stack(noise), torch.stack(timesteps)


def latents_of(images, vae, vae_eps, cached: bool):
    import torch

    # Where the VAE's weights are, read from its first parameter: diffusers' `vae.dtype` walks every submodule, which
    # cost a millisecond a step (3% of a tiny step) in bench_train_step.
    weight = next(vae.parameters())
    if cached:
        mean, std = images.to(weight.device).chunk(2, dim=1)
    else:
        with torch.no_grad():
            dist = vae.encode(data.to_model_range(images).to(weight.device, weight.dtype)).latent_dist
        mean, std = dist.mean.float(), dist.std.float()
    return (mean + std * vae_eps.to(mean.device)) * vae.config.scaling_factor


def step_loss(config, batch, pipe, models, encoder, noise_scheduler, latent_shape, accelerator):
    """(loss, instance loss, prior loss) of one batch; without prior preservation the last two equal the loss / 0.
    The maths is objective.denoising_loss; this function feeds it the batch's latents, prompts and randomness."""
    import torch

    device = accelerator.device
    vae_eps, noise, timesteps = example_randomness(batch["keys"], latent_shape,
                                                   noise_scheduler.config.num_train_timesteps, config.seed)
    latents = latents_of(batch["images"], pipe.vae, vae_eps, config.cache_latents)
    with accelerator.autocast():
        states, pooled = encoder(batch["prompts"], device, models)
        added = None if pooled is None else {"text_embeds": pooled,
                                             "time_ids": size_conditioning(batch["origins"], config.resolution, device)}
        errors = objective.denoising_loss(models["unet"], latents, states, noise.to(device), timesteps.to(device),
                                          noise_scheduler, config.snr_gamma, added)
    if config.prior_preservation:
        return priors.split_prior_loss(errors, config.prior_loss_weight)
    loss = errors.mean()
    return loss, loss, torch.zeros((), device=device)


def validation_images(config, pipe, target: Path, accelerator, default_prompt: str, steps: int | None = None):
    """A few images from fixed seeds with the weights as they are now: watch the run learn (or overfit)."""
    import torch
    from nbhelpers import persist
    from nbhelpers.diffusion.grids import make_grid

    prompts = list(config.validation_prompts) or [default_prompt]
    with torch.no_grad(), accelerator.autocast():
        images = [pipe(prompt, num_inference_steps=steps or config.class_image_steps, height=config.resolution,
                       width=config.resolution, generator=torch.Generator().manual_seed(config.seed)).images[0]
                  for prompt in prompts]
    with persist.atomic_path(target) as tmp:
        make_grid([images], col_labels=[p[:24] for p in prompts]).save(tmp, format="PNG")
    return target


def _training_scheduler(pipe):
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(pipe.scheduler.config)


@contextlib.contextmanager
def deterministic_on_cpu():
    """Bit-exact resume on a CPU: deterministic kernels and one thread (how a parallel sum is split can change its
    last bits; one thread also makes a shared 2-core CI machine faster, not slower, for these small models).
    GPUs keep their fast kernels."""
    import torch

    if torch.cuda.is_available():
        yield
        return
    before = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.set_num_threads(before[1])


def release_accelerate_state() -> None:
    """Forget accelerate's process-wide state after a single-process run, so a notebook can train again with
    other settings (mixed precision, accumulation) in the same kernel."""
    import torch.distributed

    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        from accelerate.state import AcceleratorState, GradientState

        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
