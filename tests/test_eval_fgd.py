from pathlib import Path

import numpy as np
import pytest
import torch

from iasa.eval.fgd_autoencoder import (
    SMPLX_PARENTS,
    FgdFeatureExtractor,
    edge_topology,
    fgd,
    limb_chains,
    pooling_groups,
    poses_to_rot6d,
)


@pytest.fixture(scope="module")
def extractor() -> FgdFeatureExtractor:
    torch.manual_seed(0)
    model = FgdFeatureExtractor().eval()
    with torch.no_grad():  # the masked weights start at zero; give them values
        for name, parameter in model.named_parameters():
            if name.endswith("residual.0.weight") or name.endswith("shortcut.weight"):
                parameter.normal_(0, 0.1)
    return model


def test_smplx_chains_pool_to_the_240_latent_features(extractor) -> None:
    edges = edge_topology(SMPLX_PARENTS)
    chains = limb_chains(edges)
    assert [0] in chains  # the root's virtual edge
    assert [1, 4, 7, 10] in chains  # left hip, knee, ankle, foot
    assert [3, 6, 9] in chains  # the spine up to the collar-bone junction
    groups, _ = pooling_groups(edges, last=False)
    assert [1, 4] in groups and [7, 10] in groups and [3] in groups and [6, 9] in groups
    # EMAGE's FGD latent has 240 features: 12 channels for each of the 20 chains left after pooling.
    assert extractor.encoder.out_features == 240


def test_features_are_one_240_vector_per_16_frames_after_cropping_to_32(extractor) -> None:
    motion = torch.randn(2, 70, 330)
    features = extractor.features(motion)
    assert features.shape == (2 * 64 // 16, 240)
    np.testing.assert_allclose(features, extractor.features(motion[:, :64]), atol=1e-6)
    with pytest.raises(ValueError, match="at least 32 frames"):
        extractor.features(torch.randn(1, 31, 330))


def test_skeleton_conv_only_reads_nearby_edges(extractor) -> None:
    first_conv = extractor.encoder.layers[0][0].residual[0]
    motion = torch.randn(1, 330, 32)
    moved = motion.clone()
    moved[:, 33 * 6 : 34 * 6] += 1.0  # left pinky tip (joint 33)
    difference = (first_conv(moved) - first_conv(motion)).abs().sum(dim=-1)[0].reshape(55, 6).sum(-1)
    assert difference[33] > 0 and difference[32] > 0 and difference[31] > 0  # itself, 1 and 2 hops away
    assert difference[8] == 0 and difference[15] == 0 and difference[30] == 0  # ankle, head, other finger


def test_checkpoint_loads_encoder_strictly_and_skips_the_decoder(extractor, tmp_path: Path) -> None:
    state = {f"module.{key}": value for key, value in extractor.state_dict().items()}
    state["module.decoder.main.0.weight"] = torch.zeros(3)
    state["module.fc_mu.weight"] = torch.zeros(240, 240)
    path = tmp_path / "AESKConv_240_100.bin"
    torch.save({"model_state": state}, path)
    loaded = FgdFeatureExtractor.from_checkpoint(path)
    motion = torch.randn(1, 64, 330)
    np.testing.assert_array_equal(loaded.features(motion), extractor.features(motion))

    state["module.encoder.layers.9.weight"] = torch.zeros(1)
    torch.save({"model_state": state}, path)
    with pytest.raises(ValueError, match=r"unexpected keys \['encoder.layers.9.weight'\]"):
        FgdFeatureExtractor.from_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="AESKConv_240_100.bin"):
        FgdFeatureExtractor.from_checkpoint(tmp_path / "absent.bin")


def test_fgd_is_zero_for_the_same_motion_and_grows_with_a_shift(extractor) -> None:
    generator = torch.Generator().manual_seed(1)
    real = [torch.randn(1, 256, 330, generator=generator) * 0.3 for _ in range(4)]
    same = fgd(extractor, real, real)
    shifted = fgd(extractor, [clip + 0.5 for clip in real], real)
    assert abs(same) < 1e-3
    assert shifted > 1.0


def test_poses_become_rot6d_rows_per_joint() -> None:
    poses = np.zeros((3, 165), np.float32)
    poses[:, 15 * 3 + 2] = np.pi / 2  # head turned a quarter about z
    rot6d = poses_to_rot6d(poses)
    assert rot6d.shape == (1, 3, 330)
    np.testing.assert_allclose(rot6d[0, :, :6].numpy(), np.tile([1, 0, 0, 0, 1, 0], (3, 1)), atol=1e-6)
    np.testing.assert_allclose(rot6d[0, :, 90:96].numpy(), np.tile([0, -1, 0, 1, 0, 0], (3, 1)), atol=1e-6)
