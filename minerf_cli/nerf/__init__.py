"""MI-NeRF model parts (papers/mi-nerf.txt sections 3, 4 and appendices B, E).

Small modules of pure, shape-documented PyTorch functions and ``nn.Module`` s:

* :mod:`.conditioning` -- M(e, i), H(e, i), the concatenation baseline, ablations A1-A7,
  identity codes and per-frame latent codes;
* :mod:`.encoding` -- NeRF positional encoding;
* :mod:`.field` -- the :class:`~.field.Field` interface and the vanilla dynamic field (app. E);
* :mod:`.hashgrid` -- Instant-NGP multiresolution hash encoding (pure PyTorch);
* :mod:`.fast_field` -- :class:`~.fast_field.FastField`, a hash-grid field with the same interface;
* :mod:`.rays` -- pinhole rays in the canonical head space, near/far, pixel sampling;
* :mod:`.samplers` -- stratified and importance (``sample_pdf``) sampling;
* :mod:`.render` -- volume rendering (last sample = background) and the training loss;
* :mod:`.smoothing` -- learned temporal smoothing of M(e, i) and l over a window of frames
  (AD-NeRF's attention, app. E), switched on after 200k steps.

Shapes: R rays, S samples per ray, d_e expression dim, d_i identity dim, C condition dim,
L latent dim. Head space = ICT model space (cm, +y up, +z towards the viewer).
"""
