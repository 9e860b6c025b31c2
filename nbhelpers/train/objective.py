"""What a diffusion model learns from, in one function: notebook 04 prints it, and the trainer's step calls it.

    errors = denoising_loss(unet, latents, text_states, noise, timesteps, noise_scheduler, snr_gamma=5.0)
    loss = errors.mean()

The randomness (which noise, which timestep) comes in as arguments: the trainer draws it per example from a seeded
generator (loop.example_randomness), which is what makes a resumed run exactly equal to an uninterrupted one.
"""

from __future__ import annotations


def denoising_loss(unet, latents, text_states, noise, timesteps, noise_scheduler, snr_gamma=None, added_cond=None):
    """One training example per row: how badly the UNet guesses the noise that was added to a clean latent.
    Returns one (weighted) squared error per example. `added_cond`: SDXL's extra conditioning (the pooled text
    vector and the image's size and crop numbers), None for SD 1.x."""
    # 1. Forward process: mix the clean latents with the noise, the more the later the timestep:
    #    noisy = sqrt(alpha_bar_t) * latents + sqrt(1 - alpha_bar_t) * noise
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    # 2. What the UNet must predict: the noise itself (SD 1.x), or the "velocity" mix of noise and latent (v-models).
    if noise_scheduler.config.prediction_type == "epsilon":
        target = noise
    else:
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
    # 3. The UNet sees only the noisy latents, the timestep and the prompt's text states (SDXL: and added_cond).
    extra = {} if added_cond is None else {"added_cond_kwargs": added_cond}
    prediction = unet(noisy, timesteps, text_states, **extra).sample
    # 4. Mean squared error of each example (in float32: fp16 squares overflow).
    errors = ((prediction.float() - target.float()) ** 2).flatten(1).mean(dim=1)
    # 5. Min-SNR weighting: nearly clean latents (high signal-to-noise) are easy and would dominate the gradient;
    #    their weight is capped at snr_gamma / SNR.
    if snr_gamma:
        errors = errors * min_snr_weights(noise_scheduler, timesteps, snr_gamma)
    return errors


def min_snr_weights(noise_scheduler, timesteps, gamma: float):
    """Min-SNR-gamma (Hang et al. 2023): min(SNR, gamma) / SNR for noise prediction, / (SNR + 1) for velocity."""
    import torch

    alphas = noise_scheduler.alphas_cumprod.to(timesteps.device)[timesteps]
    snr = alphas / (1 - alphas)
    capped = torch.clamp(snr, max=gamma)
    return capped / (snr + 1) if noise_scheduler.config.prediction_type == "v_prediction" else capped / snr
