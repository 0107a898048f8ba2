"""JEAN's self-supervised audio representation (Sec. 3.1 / suppl. 8.1-8.2), pure torch.

* :mod:`.landmarks68`: mediapipe 478 -> 68 -> 51 landmarks, per-frame normalisation;
* :mod:`.autoencoder`: the landmark autoencoder (eye-nose / mouth embeddings, mouth swap);
* :mod:`.audio_encoder`: the CNN audio encoder over log-mel windows;
* :mod:`.losses`: InfoNCE and a SyncNet-style offset / confidence score.
"""

from .audio_encoder import AudioEncoder, mel_windows
from .autoencoder import LandmarkAutoencoder, SwapBatch, autoencoder_loss, sample_pairs, swap_mouth
from .landmarks68 import (EYE_NOSE, MEDIAPIPE_TO_51, MEDIAPIPE_TO_68, MOUTH, landmark_vectors, mediapipe_to_51,
                          mediapipe_to_68, mouth_columns, normalise_landmarks)
from .losses import SyncResult, info_nce, negatives_mask, sync_scores

__all__ = [
    "AudioEncoder", "mel_windows", "LandmarkAutoencoder", "SwapBatch", "autoencoder_loss", "sample_pairs",
    "swap_mouth", "EYE_NOSE", "MEDIAPIPE_TO_51", "MEDIAPIPE_TO_68", "MOUTH", "landmark_vectors", "mediapipe_to_51",
    "mediapipe_to_68", "mouth_columns", "normalise_landmarks", "SyncResult", "info_nce", "negatives_mask",
    "sync_scores",
]
