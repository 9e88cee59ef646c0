"""Readout calibration: dynamics untouched, pair statistics pulled to the data's."""

import numpy as np
import pytest
import torch

from hmmrnn import checkpoints as ckpt
from hmmrnn.calibrate import calibrate_checkpoint, calibrate_readout
from hmmrnn.train import pair_statistics as pair_distribution
from hmmrnn.hmm import get_hmm, one_hot, output_pair_probabilities, sample
from hmmrnn.model import NoiseRNN
from hmmrnn.train import TrainConfig, train


def _weights(seed: int = 0, hidden: int = 12, inputs: int = 5):
    return NoiseRNN(inputs, hidden, 3, generator=torch.Generator().manual_seed(seed)).weights()


def test_pair_distribution_counts_consecutive_pairs():
    outputs = np.array([[0, 0, 2], [1, 2, 2]])
    pairs = pair_distribution(torch.from_numpy(one_hot(outputs, 3)).double()).numpy()
    expected = np.zeros((3, 3))
    for a, b in [(0, 0), (0, 2), (1, 2), (2, 2)]:
        expected[a, b] += 0.25
    np.testing.assert_allclose(pairs, expected)


def test_calibration_keeps_dynamics_and_recovers_a_known_readout_statistics():
    # data emitted by the network itself with a known readout W*: calibrating from a perturbed
    # readout must bring the model's pair statistics back to the data's
    truth = _weights()
    truth = truth._replace(W_out=truth.W_out * 8.0)  # confident readout: slow-ish, structured outputs
    model = NoiseRNN.from_weights(truth)
    data = model.rollout(3000, 30, torch.Generator().manual_seed(2)).outputs.numpy()
    perturbed = truth._replace(W_out=(truth.W_out + np.random.default_rng(0).normal(0, 0.5, truth.W_out.shape)).astype(np.float32))
    original = perturbed.copy()
    result = calibrate_readout(perturbed, data, torch.Generator().manual_seed(1), n_runs=512, length=30, penalty=1e-4)
    # the caller's weights are not modified, the dynamics are copied unchanged
    for name in ("W_in", "W_rec", "W_out"):
        np.testing.assert_array_equal(getattr(perturbed, name), getattr(original, name))
    np.testing.assert_array_equal(result.weights.W_in, truth.W_in)
    np.testing.assert_array_equal(result.weights.W_rec, truth.W_rec)
    # the objective falls by orders of magnitude and the model's pairs reach the data's
    assert result.kl_after < 0.05 * result.kl_before
    np.testing.assert_allclose(result.model_pairs_after, result.data_pairs, atol=0.01)


def test_calibration_cannot_create_dynamics_the_network_lacks():
    # an untrained (flickering) network cannot reach the two-state chain's slow statistics by
    # its readout alone: the objective falls but stays far from zero
    _, data = sample(get_hmm("linear2"), 2000, 30, np.random.default_rng(0))
    result = calibrate_readout(_weights(), data, torch.Generator().manual_seed(1), n_runs=256, length=30)
    assert result.kl_after < result.kl_before
    assert result.kl_after > 1.0
    np.testing.assert_allclose(result.data_pairs, output_pair_probabilities(get_hmm("linear2")), atol=0.01)


def test_calibration_is_deterministic_and_validates_input():
    _, data = sample(get_hmm("linear2"), 500, 20, np.random.default_rng(0))
    w = _weights(3)
    a = calibrate_readout(w, data, torch.Generator().manual_seed(5), n_runs=64, length=20, max_iter=20)
    b = calibrate_readout(w, data, torch.Generator().manual_seed(5), n_runs=64, length=20, max_iter=20)
    np.testing.assert_array_equal(a.weights.W_out, b.weights.W_out)
    with pytest.raises(ValueError, match="data_outputs"):
        calibrate_readout(w, data[:, :1], torch.Generator(), n_runs=8, length=5)


def test_calibrate_checkpoint_writes_a_loadable_checkpoint(tmp_path):
    config = TrainConfig(hidden_size=8, input_size=4, seq_len=10, n_sequences=60, batch_size=16, epochs=2,
                         val_every=1, snapshot_every=1, compile=False, device="cpu")
    source = train(config, tmp_path / "src", progress=False)
    out = calibrate_checkpoint(tmp_path / "src", tmp_path / "cal", seed=0, n_runs=32, max_iter=10)
    loaded = ckpt.load(tmp_path / "cal")
    np.testing.assert_array_equal(loaded.weights.W_rec, source.weights.W_rec)
    np.testing.assert_array_equal(loaded.weights.W_out, out.weights.W_out)
    info = loaded.training["calibration"]
    assert info["kl_after"] <= info["kl_before"]
    np.testing.assert_allclose(np.array(info["source_weights_out"], dtype=np.float32), source.weights.W_out)
    assert loaded.results["calibrated"] is True
    assert loaded.history == source.history
    assert len(loaded.snapshots()) == len(ckpt.load(tmp_path / "src").snapshots())
