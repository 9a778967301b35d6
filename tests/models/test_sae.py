import pytest
import torch

from models import SAEConfig, StackedAutoencoder, to_model_input


@pytest.fixture
def model() -> StackedAutoencoder:
    torch.manual_seed(0)
    return StackedAutoencoder(SAEConfig()).eval()


def test_shapes_of_every_mapping(model: StackedAutoencoder) -> None:
    x = torch.rand(5, 784)
    assert model.encode(x).shape == (5, 256)
    assert model.encode(x, depth=1).shape == (5, 400)
    assert model.decode(model.encode(x)).shape == (5, 784)
    assert model.reconstruct(x, depth=1).shape == (5, 784)
    assert model.classify(x).shape == (5, 10)


def test_encode_depth_stops_after_that_many_layers(model: StackedAutoencoder) -> None:
    x = torch.rand(3, 784)
    first = model.encode(x, depth=1)
    assert torch.allclose(first, torch.tanh(model.encoders[0](x)))
    assert torch.allclose(model.encode(x), torch.tanh(model.encoders[1](first)))
    with pytest.raises(ValueError, match="depth must be between 1 and 2, got 3"):
        model.encode(x, depth=3)


def test_reconstructions_are_pixels_and_classify_gives_log_probabilities(model: StackedAutoencoder) -> None:
    x = torch.rand(4, 784)
    rebuilt = model.reconstruct(x)
    assert rebuilt.min() >= 0 and rebuilt.max() <= 1
    assert torch.allclose(model.classify(x).exp().sum(1), torch.ones(4), atol=1e-5)
    assert torch.equal(model(x), model.classify(x))


def test_config_round_trips_through_a_dict() -> None:
    config = SAEConfig(hidden_dims=(300, 100, 30), num_classes=5, dropout=0.3)
    assert SAEConfig.from_dict(config.to_dict()) == config
    assert StackedAutoencoder(config).encode(torch.rand(2, 784)).shape == (2, 30)


def test_preprocessing_scales_uint8_to_unit_range() -> None:
    pixels = torch.tensor([[[0] * 28] * 27 + [[255] * 28]], dtype=torch.uint8)  # (1, 28, 28)
    x = to_model_input(pixels)
    assert x.shape == (1, 784) and x.dtype == torch.float32
    assert x[0, :756].max() == 0 and x[0, 756:].min() == 1
    assert torch.equal(to_model_input(pixels.view(1, 784)), x)
    with pytest.raises(TypeError, match="expected uint8"):
        to_model_input(pixels.float())
    with pytest.raises(ValueError, match="expected images of 28x28"):
        to_model_input(torch.zeros(1, 27, 28, dtype=torch.uint8))


def test_classify_code_equals_classify_in_eval_mode(model: StackedAutoencoder) -> None:
    x = torch.rand(6, 784)
    assert torch.allclose(model.classify_code(model.encode(x)), model.classify(x))
