"""The variational auto-encoder whose perturbed reconstructions SuperMix mixes into a scan.

Encoder f: x -> (mu, log sigma^2) with a convolutional Gaussian latent (a ``latent_channels``-deep
map at 1/2**(levels-1) resolution), decoder g: z -> x in [0, 1]. Trained with the voxel-wise L1
reconstruction loss plus ``kl_weight`` times the KL divergence to N(0, I) (both averaged per
element). Sampling follows To et al. 2021: x~ = g(z * Delta), z ~ N(mu, sigma^2),
Delta ~ U(-delta, delta) drawn independently for every latent element.
"""

from __future__ import annotations

import numpy as np

from bids_lesionchange.model._backend import keras, tf
from bids_lesionchange.params import VAEParams

layers = keras.layers


def vae_input_multiple(params: VAEParams) -> int:
    """Return the number every spatial side of a VAE input must be a multiple of."""
    return 2 ** (params.levels - 1)


def _conv(x, filters, name, kernel=3, strides=1, activation="relu"):
    return layers.Conv3D(filters, kernel, strides=strides, padding="same", activation=activation,
                         name=name)(x)


def build_vae(params: VAEParams) -> tuple[keras.Model, keras.Model]:
    """Build the VAE encoder and decoder (untrained).

    Returns
    -------
    (encoder, decoder) : tuple of keras.Model
        encoder: (batch, X, Y, Z, 1) -> [mu, log_var], each (batch, X/m, Y/m, Z/m, latent_channels)
        with m = 2**(levels-1); decoder: latent -> (batch, X, Y, Z, 1) in [0, 1].
    """
    if params.pooling not in ("maxpool", "strided"):
        raise ValueError(f"unknown VAE pooling '{params.pooling}'; choose maxpool or strided")
    image = keras.Input(shape=(None, None, None, 1), name="image")
    x = image
    for level in range(params.levels):
        filters = params.base_filters * 2**level
        if level > 0:
            if params.pooling == "maxpool":
                x = layers.MaxPooling3D(2, name=f"vae_enc{level}_pool")(x)
            else:
                x = _conv(x, filters, f"vae_enc{level}_stride", strides=2)
        x = _conv(x, filters, f"vae_enc{level}_conv1")
        x = _conv(x, filters, f"vae_enc{level}_conv2")
    mu = _conv(x, params.latent_channels, "vae_mu", kernel=1, activation=None)
    log_var = _conv(x, params.latent_channels, "vae_log_var", kernel=1, activation=None)
    encoder = keras.Model(image, [mu, log_var], name="vae_encoder")

    latent = keras.Input(shape=(None, None, None, params.latent_channels), name="latent")
    top = params.levels - 1
    x = _conv(latent, params.base_filters * 2**top, "vae_dec_in")
    for level in range(top - 1, -1, -1):
        filters = params.base_filters * 2**level
        x = layers.Conv3DTranspose(filters, 2, strides=2, activation="relu", name=f"vae_dec{level}_up")(x)
        x = _conv(x, filters, f"vae_dec{level}_conv1")
        x = _conv(x, filters, f"vae_dec{level}_conv2")
    out = layers.Conv3D(1, 1, activation="sigmoid", dtype="float32", name="vae_out")(x)
    decoder = keras.Model(latent, out, name="vae_decoder")
    return encoder, decoder


class VAE:
    """Encoder and decoder of one VAE with its training step and perturbed sampling."""

    def __init__(self, params: VAEParams, seed: int = 0, graph_mode: bool = True):
        self.params = params
        keras.utils.set_random_seed(seed)
        self.encoder, self.decoder = build_vae(params)
        self.optimizer = keras.optimizers.Adam(learning_rate=params.learning_rate)
        self._train_step, self._sample = self._train_step_eager, self._sample_eager
        if graph_mode:
            self._train_step = tf.function(self._train_step_eager, reduce_retracing=True)
            self._sample = tf.function(self._sample_eager, reduce_retracing=True)

    @property
    def trainable_variables(self):
        return self.encoder.trainable_variables + self.decoder.trainable_variables

    def loss(self, x, training: bool = False):
        """Return (total, l1, kl) for a batch (batch, X, Y, Z, 1); lower is better."""
        mu, log_var = self.encoder(x, training=training)
        eps = tf.random.normal(tf.shape(mu))
        z = mu + tf.exp(0.5 * log_var) * eps
        recon = self.decoder(z, training=training)
        l1 = tf.reduce_mean(tf.abs(recon - x))
        kl = -0.5 * tf.reduce_mean(1.0 + log_var - tf.square(mu) - tf.exp(log_var))
        return l1 + self.params.kl_weight * kl, l1, kl

    def _train_step_eager(self, x):
        with tf.GradientTape() as tape:
            total, l1, kl = self.loss(x, training=True)
        grads = tape.gradient(total, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        return total, l1, kl

    def train_step(self, batch: np.ndarray) -> dict[str, float]:
        """Run one Adam step on a batch of crops (batch, X, Y, Z) and return its losses."""
        total, l1, kl = self._train_step(tf.convert_to_tensor(batch[..., None], tf.float32))
        return {"loss": float(total), "l1": float(l1), "kl": float(kl)}

    def _sample_eager(self, x, delta_noise, eps):
        mu, log_var = self.encoder(x, training=False)
        z = mu + tf.exp(0.5 * log_var) * eps
        return self.decoder(z * delta_noise, training=False)

    def reconstruct(self, volume: np.ndarray, rng: np.random.Generator, delta: float | None = None) -> np.ndarray:
        """Return a perturbed reconstruction g(z * Delta) of one volume (sides multiples of 2**(levels-1)).

        Parameters
        ----------
        volume : ndarray (X, Y, Z) float32 in [0, 1]
        rng : numpy Generator drawing z's noise and Delta ~ U(-delta, delta)
        delta : float, default ``params.delta``; 0 < delta. ``delta=None`` uses the preset.
        """
        delta = self.params.delta if delta is None else delta
        multiple = vae_input_multiple(self.params)
        if any(s % multiple for s in volume.shape):
            raise ValueError(f"VAE input sides must be multiples of {multiple}, got {volume.shape}")
        latent_shape = (1, *(s // multiple for s in volume.shape), self.params.latent_channels)
        eps = rng.standard_normal(latent_shape).astype(np.float32)
        noise = rng.uniform(-delta, delta, latent_shape).astype(np.float32)
        out = self._sample(tf.convert_to_tensor(volume[None, ..., None], tf.float32),
                           tf.convert_to_tensor(noise), tf.convert_to_tensor(eps))
        return np.asarray(out)[0, ..., 0]

    def save_weights(self, path) -> None:
        """Write encoder and decoder weights to one ``.weights.h5`` file."""
        _pair_model(self).save_weights(str(path))

    def load_weights(self, path) -> None:
        """Read weights written by :meth:`save_weights`."""
        _pair_model(self).load_weights(str(path))


def _pair_model(vae: VAE) -> keras.Model:
    """Return one model holding encoder and decoder, so their weights share a file."""
    image = keras.Input(shape=(None, None, None, 1))
    mu, _ = vae.encoder(image)
    return keras.Model(image, vae.decoder(mu), name="vae")
