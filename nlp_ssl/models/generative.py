"""Small generative image models whose encoders serve as feature extractors: autoencoders, a VAE, a context
encoder (generator + discriminator) and a PixelCNN.

They are plain ``nn.Module`` s, not transformers models: each keeps its constructor arguments in a
``config`` dict and saves to a folder as ``module.json`` (class name and config) plus
``module.safetensors`` (the state dict), so a checkpoint never goes through pickle. Load with
``ClassName.load(folder)`` or, not knowing the class, :func:`load_generative`.

Papers:

- autoencoders: Hinton & Salakhutdinov 2006, "Reducing the Dimensionality of Data with Neural Networks";
  denoising: Vincent, Larochelle, Bengio & Manzagol 2008, "Extracting and Composing Robust Features with
  Denoising Autoencoders".
- VAE: Kingma & Welling 2014, "Auto-Encoding Variational Bayes"; beta-VAE: Higgins et al. 2017, "beta-VAE:
  Learning Basic Visual Concepts with a Constrained Variational Framework".
- context encoder: Pathak, Krahenbuhl, Donahue, Darrell & Efros 2016, "Context Encoders: Feature Learning
  by Inpainting"; the discriminator scores patches as in Isola, Zhu, Zhou & Efros 2017 ("Image-to-Image
  Translation with Conditional Adversarial Networks").
- PixelCNN: van den Oord, Kalchbrenner & Kavukcuoglu 2016, "Pixel Recurrent Neural Networks".
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_model
from torch import nn

from nlp_ssl.errors import UserError

__all__ = [
    "ContextEncoderGenerator",
    "ConvAutoencoder",
    "ConvVAE",
    "MaskedConv2d",
    "PatchDiscriminator",
    "PixelCNN",
    "bits_per_dim",
    "corrupt",
    "corrupt_with",
    "corruption_noise",
    "load_generative",
    "sample",
    "vae_loss",
]

_CONFIG_FILE = "module.json"
_WEIGHTS_FILE = "module.safetensors"


# ----------------------------------------------------------------------------------------- save and load


class SavableModule(nn.Module):
    """An ``nn.Module`` rebuilt from its ``config`` dict (the constructor's keyword arguments)."""

    config: dict[str, Any]

    def save(self, folder: str | Path) -> Path:
        """Write ``module.json`` and ``module.safetensors`` into ``folder`` (created if needed)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"class": type(self).__name__, "config": self.config}
        (folder / _CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        save_model(self, str(folder / _WEIGHTS_FILE))
        return folder

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu") -> SavableModule:
        """Rebuild the module saved in ``folder`` and load its weights.

        Raises:
            UserError: files missing, or the folder holds another class.
        """
        meta = _read_meta(folder)
        if meta["class"] != cls.__name__:
            raise UserError(f"{folder} holds a {meta['class']}, not a {cls.__name__}; load it with "
                            f"{meta['class']}.load or load_generative")
        return _build(cls, meta["config"], folder, device)


def _read_meta(folder: str | Path) -> dict[str, Any]:
    folder = Path(folder)
    config_path, weights_path = folder / _CONFIG_FILE, folder / _WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise UserError(f"{path} not found; point to a folder written by the module's save()")
    try:
        meta = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{config_path} is not valid JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict) or "class" not in meta:
        raise UserError(f"{config_path} must hold {{'class': ..., 'config': {{...}}}}")
    return meta


def _build(cls: type[SavableModule], config: dict[str, Any], folder: str | Path,
           device: str | torch.device) -> SavableModule:
    try:
        module = cls(**config)
    except TypeError as err:
        raise UserError(f"{Path(folder) / _CONFIG_FILE}: config does not fit {cls.__name__} ({err})") from None
    load_model(module, str(Path(folder) / _WEIGHTS_FILE), strict=True, device=str(device))
    return module.to(device)


def load_generative(folder: str | Path, device: str | torch.device = "cpu", *, weights: bool = True) -> SavableModule:
    """Load any module of this file from its ``save`` folder, whatever its class.

    ``weights=False`` builds the same architecture with fresh (random) weights instead, e.g. as the untrained
    baseline of an evaluation; seed torch's global RNG first to make it reproducible.
    """
    meta = _read_meta(folder)
    registry: dict[str, type[SavableModule]] = {
        c.__name__: c for c in (ConvAutoencoder, ConvVAE, ContextEncoderGenerator, PatchDiscriminator, PixelCNN)}
    if meta["class"] not in registry:
        raise UserError(f"{folder} holds an unknown module class {meta['class']!r}; expected one of "
                        f"{sorted(registry)}")
    if not weights:
        try:
            return registry[meta["class"]](**meta["config"]).to(device)
        except TypeError as err:
            raise UserError(f"{Path(folder) / _CONFIG_FILE}: config does not fit {meta['class']} ({err})") from None
    return _build(registry[meta["class"]], meta["config"], folder, device)


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise UserError(f"{name} must be a positive integer, got {value!r}")


def _check_input(x: torch.Tensor, channels: int, image_size: int | None, who: str) -> None:
    if x.dim() != 4 or x.shape[1] != channels or (
            image_size is not None and tuple(x.shape[-2:]) != (image_size, image_size)):
        size = f"{image_size}, {image_size}" if image_size is not None else "H, W"
        raise UserError(f"{who} expects images shaped [B, {channels}, {size}], got {tuple(x.shape)}")


# ---------------------------------------------------------------------------------------- conv trunks


def _resolutions(image_size: int) -> list[int]:
    """Feature-map sides after each stride-2 stage: halve while even and still >= 4 (28 -> 14 -> 7)."""
    sides = [image_size]
    while sides[-1] % 2 == 0 and sides[-1] // 2 >= 4:
        sides.append(sides[-1] // 2)
    if len(sides) == 1:
        raise UserError(f"image_size {image_size} cannot be halved even once; use an even size >= 8 (e.g. 28)")
    return sides


def _widths(width: int, stages: int) -> list[int]:
    """Channels after the stem and after each stride-2 stage: doubling, capped at 8x."""
    return [width * min(2 ** i, 8) for i in range(stages + 1)]


class _ConvEncoder(nn.Module):
    """``[B, C, S, S]`` -> feature map ``[B, c_L, s_L, s_L]``: a 3x3 stem, then 4x4 stride-2 convolutions."""

    def __init__(self, in_channels: int, image_size: int, width: int):
        super().__init__()
        sides = _resolutions(image_size)
        chans = _widths(width, len(sides) - 1)
        layers: list[nn.Module] = [nn.Conv2d(in_channels, chans[0], 3, padding=1), nn.ReLU()]
        for c_in, c_out in zip(chans, chans[1:]):
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.ReLU()]
        self.net = nn.Sequential(*layers)
        self.out_channels, self.out_side = chans[-1], sides[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _ConvDecoder(nn.Module):
    """Feature map ``[B, c_L, s_L, s_L]`` -> ``[B, C, S, S]``, mirroring :class:`_ConvEncoder`.

    4x4 stride-2 transposed convolutions with padding 1 exactly double the side, so 7 -> 14 -> 28.
    """

    def __init__(self, out_channels: int, image_size: int, width: int):
        super().__init__()
        sides = _resolutions(image_size)
        chans = _widths(width, len(sides) - 1)
        layers: list[nn.Module] = []
        for c_in, c_out in zip(reversed(chans), list(reversed(chans))[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1), nn.ReLU()]
        layers.append(nn.Conv2d(chans[0], out_channels, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


# -------------------------------------------------------------------------------------------- autoencoders


def corrupt(x: torch.Tensor, kind: Literal["gaussian", "masking"], level: float,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """Input corruption for a denoising autoencoder (Vincent et al. 2008; 2010 for the Gaussian variant).

    - ``"gaussian"``: add isotropic Gaussian noise of standard deviation ``level``.
    - ``"masking"``: set exactly ``round(level * C*H*W)`` randomly chosen elements of each image to 0 (the
      paper's masking noise: "a fixed number of components chosen at random").

    The autoencoder is then trained to reconstruct the clean ``x`` from ``corrupt(x, ...)``. Equal to
    ``corrupt_with(x, kind, level, corruption_noise(x.shape, kind, ...))`` (the draws and the corruption are
    split so that a global batch's noise can be drawn once and sliced per process).

    Args:
        x: ``[B, C, H, W]`` float images.
        level: noise standard deviation (gaussian) or fraction of elements zeroed (masking, in ``[0, 1]``).
        generator: optional RNG (else torch's global RNG).

    Returns:
        ``[B, C, H, W]``.
    """
    _check_corruption(kind, level)
    return corrupt_with(x, kind, level, corruption_noise(x.shape, kind, device=x.device, generator=generator))


def _check_corruption(kind: str, level: float) -> None:
    if kind == "gaussian":
        if level < 0:
            raise UserError(f"gaussian corruption level (noise std) must be >= 0, got {level}")
    elif kind == "masking":
        if not 0.0 <= level <= 1.0:
            raise UserError(f"masking corruption level (fraction zeroed) must be in [0, 1], got {level}")
    else:
        raise UserError(f"unknown corruption {kind!r}; use 'gaussian' or 'masking'")


def corruption_noise(shape: tuple[int, ...] | torch.Size, kind: Literal["gaussian", "masking"], *,
                     device: torch.device | str | None = None,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """The random numbers behind :func:`corrupt`: standard normal (``"gaussian"``) or uniform scores
    (``"masking"``: the lowest ``level`` share of each image's scores are zeroed), shaped ``shape``."""
    _check_corruption(kind, 0.0)
    device = torch.device(device) if device is not None else torch.device("cpu")
    draw_device = generator.device if generator is not None else device
    draw = torch.randn if kind == "gaussian" else torch.rand
    return draw(tuple(shape), generator=generator, device=draw_device).to(device)


def corrupt_with(x: torch.Tensor, kind: Literal["gaussian", "masking"], level: float,
                 noise: torch.Tensor) -> torch.Tensor:
    """Corrupt ``x`` ``[B, C, H, W]`` with drawn ``noise`` of the same shape (:func:`corruption_noise`)."""
    _check_corruption(kind, level)
    if noise.shape != x.shape:
        raise UserError(f"corrupt_with: noise {tuple(noise.shape)} must have the images' shape {tuple(x.shape)}")
    noise = noise.to(x.device)
    if kind == "gaussian":
        return x + level * noise.to(x.dtype)
    flat = x.reshape(x.shape[0], -1)
    zeroed = round(level * flat.shape[1])
    # The `zeroed` smallest of i.i.d. uniforms per row are a uniformly random subset of that size.
    drop = torch.zeros_like(flat, dtype=torch.bool)
    drop.scatter_(1, noise.reshape(flat.shape).topk(zeroed, dim=1, largest=False).indices, True)
    return flat.masked_fill(drop, 0.0).view_as(x)


class ConvAutoencoder(SavableModule):
    """Undercomplete convolutional autoencoder: image -> ``latent_dim`` code -> image.

    The decoder returns unbounded values: for pixels in ``[0, 1]`` read them as Bernoulli logits
    (``F.binary_cross_entropy_with_logits(recon, x)``) or apply a sigmoid. Denoising is a training choice:
    feed :func:`corrupt` ed images and reconstruct the clean ones.

    Args:
        in_channels: ``C``.
        image_size: side ``S`` of the square images (even, e.g. 28, 32, 64).
        latent_dim: code size ``D``, well below ``C*S*S`` (the bottleneck is what makes features).
        width: channels of the first convolution (doubled at each down-sampling, capped at 8x).
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, latent_dim: int = 32, width: int = 32):
        super().__init__()
        _check_positive(in_channels=in_channels, image_size=image_size, latent_dim=latent_dim, width=width)
        self.config = dict(in_channels=in_channels, image_size=image_size, latent_dim=latent_dim, width=width)
        self.encoder = _ConvEncoder(in_channels, image_size, width)
        flat = self.encoder.out_channels * self.encoder.out_side ** 2
        if latent_dim >= in_channels * image_size ** 2:
            raise UserError(f"latent_dim {latent_dim} must be smaller than the image's {in_channels * image_size ** 2} "
                            "values for an undercomplete autoencoder")
        self.to_code = nn.Linear(flat, latent_dim)
        self.from_code = nn.Linear(latent_dim, flat)
        self.decoder = _ConvDecoder(in_channels, image_size, width)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, S, S]`` -> code ``[B, D]``."""
        _check_input(x, self.config["in_channels"], self.config["image_size"], type(self).__name__)
        return self.to_code(self.encoder(x).flatten(1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Code ``[B, D]`` -> reconstruction ``[B, C, S, S]`` (unbounded; logits for [0, 1] pixels)."""
        h = F.relu(self.from_code(z))
        return self.decoder(h.view(-1, self.encoder.out_channels, self.encoder.out_side, self.encoder.out_side))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, S, S]`` -> reconstruction ``[B, C, S, S]``."""
        return self.decode(self.encode(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The code ``[B, D]`` as a representation."""
        return self.encode(x)


class ConvVAE(SavableModule):
    """Convolutional variational autoencoder with a diagonal Gaussian posterior and a N(0, I) prior.

    Kingma & Welling 2014. Train with :func:`vae_loss` (``beta > 1`` gives the beta-VAE of Higgins et al.
    2017). The decoder returns Bernoulli logits for pixels in ``[0, 1]``.

    Args: as :class:`ConvAutoencoder`, ``latent_dim`` being the size of ``z``.
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, latent_dim: int = 16, width: int = 32):
        super().__init__()
        _check_positive(in_channels=in_channels, image_size=image_size, latent_dim=latent_dim, width=width)
        self.config = dict(in_channels=in_channels, image_size=image_size, latent_dim=latent_dim, width=width)
        self.encoder = _ConvEncoder(in_channels, image_size, width)
        flat = self.encoder.out_channels * self.encoder.out_side ** 2
        self.to_posterior = nn.Linear(flat, 2 * latent_dim)
        self.from_latent = nn.Linear(latent_dim, flat)
        self.decoder = _ConvDecoder(in_channels, image_size, width)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, C, S, S]`` -> posterior ``(mu [B, D], logvar [B, D])``."""
        _check_input(x, self.config["in_channels"], self.config["image_size"], type(self).__name__)
        mu, logvar = self.to_posterior(self.encoder(x).flatten(1)).chunk(2, dim=1)
        return mu, logvar

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None,
                       eps: torch.Tensor | None = None) -> torch.Tensor:
        """``z = mu + exp(logvar / 2) * eps``, ``eps ~ N(0, I)``: a sample that gradients flow through.

        ``eps`` ``[B, D]`` may be given (drawn elsewhere, e.g. for a global batch); otherwise it is drawn here.
        """
        if eps is None:
            draw_device = generator.device if generator is not None else mu.device
            eps = torch.randn(mu.shape, generator=generator, device=draw_device, dtype=mu.dtype)
        elif eps.shape != mu.shape:
            raise UserError(f"reparameterize: eps {tuple(eps.shape)} must have the shape of mu {tuple(mu.shape)}")
        return mu + torch.exp(0.5 * logvar) * eps.to(device=mu.device, dtype=mu.dtype)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``z [B, D]`` -> Bernoulli logits ``[B, C, S, S]``."""
        h = F.relu(self.from_latent(z))
        return self.decoder(h.view(-1, self.encoder.out_channels, self.encoder.out_side, self.encoder.out_side))

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None, eps: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``[B, C, S, S]`` -> ``(recon_logits [B, C, S, S], mu [B, D], logvar [B, D])``; ``eps`` ``[B, D]``
        optionally gives the reparameterisation noise (see :meth:`reparameterize`)."""
        mu, logvar = self.encode(x)
        return self.decode(self.reparameterize(mu, logvar, generator, eps)), mu, logvar

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior mean ``mu [B, D]`` as a representation."""
        return self.encode(x)[0]


def vae_loss(recon_logits: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
             beta: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Negative ELBO with a Bernoulli likelihood (Kingma & Welling 2014), ``beta``-weighted KL (Higgins 2017).

    Per image: ``recon = sum over pixels of BCE(logits, x)`` (``-log p(x | z)``) and
    ``kl = -1/2 * sum_d (1 + logvar_d - mu_d^2 - exp(logvar_d))`` (``KL(q(z | x) || N(0, I))``, the paper's
    appendix B closed form); ``loss = recon + beta * kl``. All three are averaged over the batch.

    Args:
        recon_logits: ``[B, C, H, W]`` decoder logits.
        x: ``[B, C, H, W]`` targets in ``[0, 1]``.
        mu, logvar: ``[B, D]`` posterior parameters.
        beta: weight of the KL term (1: the VAE; > 1: beta-VAE).

    Returns:
        ``(loss, recon, kl)``, scalars.
    """
    if recon_logits.shape != x.shape:
        raise UserError(f"vae_loss: recon_logits {tuple(recon_logits.shape)} and x {tuple(x.shape)} differ")
    if mu.shape != logvar.shape or mu.shape[0] != x.shape[0]:
        raise UserError(f"vae_loss: mu {tuple(mu.shape)} and logvar {tuple(logvar.shape)} must be [B, D] with "
                        f"B = {x.shape[0]}")
    batch = x.shape[0]
    recon = F.binary_cross_entropy_with_logits(recon_logits, x, reduction="sum") / batch
    kl = -0.5 * (1.0 + logvar - mu.square() - logvar.exp()).sum() / batch
    return recon + beta * kl, recon, kl


# ---------------------------------------------------------------------------------------- context encoder


class _ChannelwiseLinear(nn.Module):
    """Pathak et al. 2016, section 3.1: a fully connected layer inside each channel of an ``s x s`` map.

    Each of the ``c`` channels gets its own ``s^2 x s^2`` matrix, so every output position sees the whole
    map (what the missing region needs) at ``c s^4`` parameters instead of ``c^2 s^4``; a 1x1 convolution
    then mixes channels.
    """

    def __init__(self, channels: int, side: int):
        super().__init__()
        n = side * side
        self.weight = nn.Parameter(torch.randn(channels, n, n) / math.sqrt(n))
        self.bias = nn.Parameter(torch.zeros(channels, n))
        self.mix = nn.Conv2d(channels, channels, 1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        b, c, s, _ = h.shape
        spread = torch.einsum("bcn,cnm->bcm", h.reshape(b, c, s * s), self.weight) + self.bias
        return self.mix(F.relu(spread).view(b, c, s, s))


class ContextEncoderGenerator(SavableModule):
    """The context encoder: masked image -> full image (Pathak et al. 2016).

    Encoder (strided convolutions), a channel-wise fully connected bottleneck, and a decoder of transposed
    convolutions. The input is the image with its hidden pixels filled (the paper fills with the dataset
    mean); the output covers the whole image and the loss looks only at the hidden region (and its
    overlap border): :func:`nlp_ssl.data.pretext.masked_l2_loss`, plus an adversarial term from
    :class:`PatchDiscriminator`. Plain convolutions without batch norm, so outputs do not depend on the
    batch. :meth:`features` gives the encoder's pooled bottleneck.

    Args:
        in_channels: ``C``.
        image_size: side ``S`` (even, e.g. 28, 32, 64).
        width: channels of the first convolution.
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, width: int = 32):
        super().__init__()
        _check_positive(in_channels=in_channels, image_size=image_size, width=width)
        self.config = dict(in_channels=in_channels, image_size=image_size, width=width)
        self.encoder = _ConvEncoder(in_channels, image_size, width)
        self.bottleneck = _ChannelwiseLinear(self.encoder.out_channels, self.encoder.out_side)
        self.decoder = _ConvDecoder(in_channels, image_size, width)

    def forward(self, x_masked: torch.Tensor) -> torch.Tensor:
        """``[B, C, S, S]`` image with hidden pixels filled -> prediction ``[B, C, S, S]``."""
        _check_input(x_masked, self.config["in_channels"], self.config["image_size"], type(self).__name__)
        return self.decoder(F.relu(self.bottleneck(self.encoder(x_masked))))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Global average of the encoder's last feature map, ``[B, c_L]``."""
        _check_input(x, self.config["in_channels"], self.config["image_size"], type(self).__name__)
        return self.encoder(x).mean(dim=(2, 3))


class PatchDiscriminator(SavableModule):
    """Real-or-inpainted scores per image patch (PatchGAN, Isola et al. 2017), the context encoder's critic.

    ``n_layers`` 4x4 stride-2 convolutions with LeakyReLU(0.2) (DCGAN's discriminator, as Pathak et al.
    use), then a 3x3 convolution to one logit per location; each logit sees a patch of the input, so the
    same network scores whole images or just the filled region. No normalisation, so real and fake batches
    can be scored separately without batch statistics leaking between them.

    Args:
        in_channels: ``C``.
        width: channels of the first convolution (doubled per layer, capped at 8x).
        n_layers: stride-2 layers; inputs need a side of at least ``2 ** n_layers``.
    """

    def __init__(self, in_channels: int = 1, width: int = 32, n_layers: int = 3):
        super().__init__()
        _check_positive(in_channels=in_channels, width=width, n_layers=n_layers)
        self.config = dict(in_channels=in_channels, width=width, n_layers=n_layers)
        chans = [in_channels] + _widths(width, n_layers - 1)
        layers: list[nn.Module] = []
        for c_in, c_out in zip(chans, chans[1:]):
            layers += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        layers.append(nn.Conv2d(chans[-1], 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> logits ``[B, 1, H / 2^n, W / 2^n]`` (floor at each layer), real = positive."""
        _check_input(x, self.config["in_channels"], None, type(self).__name__)
        smallest = 2 ** self.config["n_layers"]
        if min(x.shape[-2:]) < smallest:
            raise UserError(f"PatchDiscriminator with n_layers={self.config['n_layers']} needs inputs of at least "
                            f"{smallest}x{smallest}, got {tuple(x.shape[-2:])}; use fewer layers")
        return self.net(x)


# ------------------------------------------------------------------------------------------------ PixelCNN


class MaskedConv2d(nn.Conv2d):
    """A convolution that sees only pixels before the centre in raster order (van den Oord et al. 2016).

    Mask ``"A"`` (first layer) also hides the centre pixel, so the output at a pixel never depends on that
    pixel's own value; mask ``"B"`` (later layers) keeps the centre, which at that depth already holds only
    earlier pixels' information. Single-channel masks: all input channels are visible at allowed
    positions, which is correct for grey images only (colour needs the paper's R -> G -> B channel groups).
    The mask multiplies the weight in ``forward``, so masked weights also get zero gradient.
    """

    def __init__(self, mask_type: Literal["A", "B"], in_channels: int, out_channels: int, kernel_size: int):
        if mask_type not in ("A", "B"):
            raise UserError(f"MaskedConv2d mask_type must be 'A' or 'B', got {mask_type!r}")
        if kernel_size % 2 != 1:
            raise UserError(f"MaskedConv2d kernel_size must be odd (a centre pixel), got {kernel_size}")
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        centre = kernel_size // 2
        mask = torch.ones(kernel_size, kernel_size)
        mask[centre, centre + (mask_type == "B"):] = 0  # the centre (type A) and everything right of it
        mask[centre + 1:] = 0  # every row below
        self.mask_type = mask_type
        # Rebuilt from the type, so not saved with the weights.
        self.register_buffer("mask", mask[None, None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class _PixelCNNResidual(nn.Module):
    """The paper's PixelCNN residual block.

    ReLU, 1x1 (2h -> h), ReLU, 3x3 mask B (h -> h), ReLU, 1x1 (h -> 2h), plus the input.
    """

    def __init__(self, channels: int):
        super().__init__()
        half = channels // 2
        self.body = nn.Sequential(
            nn.ReLU(), MaskedConv2d("B", channels, half, 1),
            nn.ReLU(), MaskedConv2d("B", half, half, 3),
            nn.ReLU(), MaskedConv2d("B", half, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class PixelCNN(SavableModule):
    """An autoregressive model of grey images: a 256-way categorical per pixel given all earlier pixels.

    van den Oord et al. 2016 (their PixelCNN architecture): a 7x7 mask-A convolution, residual blocks with 3x3 mask-B
    convolutions, then two ReLU + 1x1 layers to 256 logits per pixel. Only ``in_channels == 1``: colour
    images need masks that also order the channels within a pixel (R, then G given R, then B given R, G),
    which this implementation does not have.

    Args:
        in_channels: must be 1.
        hidden: ``2h``, the channels of the residual stream (even).
        n_residual: residual blocks.
        output_hidden: channels of the 1x1 layer before the logits.
        levels: intensity levels per pixel (256 for 8-bit images).
    """

    def __init__(self, in_channels: int = 1, hidden: int = 64, n_residual: int = 5, output_hidden: int = 128,
                 levels: int = 256):
        super().__init__()
        if in_channels != 1:
            raise UserError(f"PixelCNN supports grey images (in_channels=1) only, got {in_channels}; colour "
                            "needs within-pixel channel masks, which are not implemented: convert to grey")
        _check_positive(hidden=hidden, n_residual=n_residual, output_hidden=output_hidden, levels=levels)
        if hidden % 2:
            raise UserError(f"PixelCNN hidden must be even (the residual blocks halve it), got {hidden}")
        self.config = dict(in_channels=in_channels, hidden=hidden, n_residual=n_residual,
                           output_hidden=output_hidden, levels=levels)
        self.input_layer = MaskedConv2d("A", in_channels, hidden, 7)
        self.blocks = nn.Sequential(*[_PixelCNNResidual(hidden) for _ in range(n_residual)])
        self.output_layers = nn.Sequential(
            nn.ReLU(), MaskedConv2d("B", hidden, output_hidden, 1),
            nn.ReLU(), MaskedConv2d("B", output_hidden, levels * in_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, levels, C, H, W]`` of every pixel given the pixels before it.

        Args:
            x: ``[B, C, H, W]``, integer intensities ``0 .. levels-1`` (e.g. uint8) or floats already scaled
                to ``[0, 1]``.
        """
        _check_input(x, self.config["in_channels"], None, type(self).__name__)
        levels = self.config["levels"]
        scaled = x.float() / (levels - 1) if not x.is_floating_point() else x
        h = self.blocks(self.input_layer(scaled * 2.0 - 1.0))  # centred input trains faster
        logits = self.output_layers(h)
        return logits.view(x.shape[0], levels, x.shape[1], *x.shape[2:])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Global average of the residual stream, ``[B, hidden]``: a representation for probes."""
        _check_input(x, self.config["in_channels"], None, type(self).__name__)
        scaled = x.float() / (self.config["levels"] - 1) if not x.is_floating_point() else x
        return self.blocks(self.input_layer(scaled * 2.0 - 1.0)).mean(dim=(2, 3))


def bits_per_dim(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood in bits per sub-pixel: ``NLL / (C*H*W * ln 2)``, averaged over the batch.

    The standard PixelRNN/PixelCNN metric (van den Oord et al. 2016): with 256 levels a
    uniform model scores 8 bits/dim.

    Args:
        logits: ``[B, L, C, H, W]`` from :class:`PixelCNN`.
        x: ``[B, C, H, W]`` integer intensities ``0 .. L-1``.

    Returns:
        scalar.
    """
    if logits.dim() != 5 or logits.shape[0] != x.shape[0] or logits.shape[2:] != x.shape[1:]:
        raise UserError(f"bits_per_dim: logits must be [B, L, C, H, W] matching x [B, C, H, W], got "
                        f"{tuple(logits.shape)} and {tuple(x.shape)}")
    if x.is_floating_point():
        raise UserError("bits_per_dim: x must hold integer intensities (e.g. uint8), not floats")
    nll = F.cross_entropy(logits, x.long(), reduction="sum")
    return nll / (x.numel() * math.log(2.0))


@torch.no_grad()
def sample(model: PixelCNN, n: int, shape: tuple[int, int, int], generator: torch.Generator | None = None,
           device: str | torch.device | None = None) -> torch.Tensor:
    """Draw ``n`` images pixel by pixel in raster order from a :class:`PixelCNN`.

    Each of the ``H * W`` steps runs the whole network on the partial images and samples one pixel from its
    categorical, so this is slow by nature (it is meant for small images and for looking at what the model
    learnt). Runs in eval mode; the model's training flag is restored afterwards.

    Args:
        model: the PixelCNN.
        n: number of images.
        shape: ``(C, H, W)``.
        generator: optional RNG (else torch's global RNG).
        device: where to sample (default: the model's device).

    Returns:
        ``[n, C, H, W]`` uint8 (levels must be <= 256).
    """
    channels, height, width = shape
    if model.config["levels"] > 256:
        raise UserError(f"sample returns uint8 images, which hold at most 256 levels, not {model.config['levels']}")
    if channels != model.config["in_channels"]:
        raise UserError(f"sample: shape has {channels} channels but the model was built for "
                        f"{model.config['in_channels']}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    draw_device = generator.device if generator is not None else device
    was_training = model.training
    model.eval()
    images = torch.zeros(n, channels, height, width, dtype=torch.uint8, device=device)
    try:
        for row in range(height):
            for col in range(width):
                probs = torch.softmax(model(images)[:, :, :, row, col], dim=1)  # [n, L, C]
                flat = probs.permute(0, 2, 1).reshape(n * channels, -1).to(draw_device)
                drawn = torch.multinomial(flat, 1, generator=generator).view(n, channels)
                images[:, :, row, col] = drawn.to(device=device, dtype=torch.uint8)
    finally:
        model.train(was_training)
    return images
