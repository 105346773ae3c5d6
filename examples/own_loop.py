"""Dynamic sparse training (DST-EE) in your own training loop, with your own model.

    python examples/own_loop.py

Trains a small Conv1d + Linear network on a synthetic 3-class signal task with 90% of its prunable weights
zero, and prints the per-layer active counts, which stay exactly what sparsify() chose.
"""
import torch
from torch import nn

from dst_cli.sparse import sparsify


class SignalNet(nn.Module):
    def __init__(self, classes: int = 3):
        super().__init__()
        self.features = nn.Sequential(nn.Conv1d(1, 16, 5, padding=2), nn.ReLU(), nn.AdaptiveAvgPool1d(8))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(16 * 8, 64), nn.ReLU(), nn.Linear(64, classes))

    def forward(self, x):
        return self.classifier(self.features(x))


def synthetic_signals(samples: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy sine waves whose frequency (1, 2 or 3 periods) is the label."""
    labels = torch.randint(0, 3, (samples,), generator=generator)
    time = torch.linspace(0, 2 * torch.pi, 32)
    clean = torch.sin((labels[:, None] + 1).float() * time)
    return (clean + 0.3 * torch.randn(samples, 32, generator=generator)).unsqueeze(1), labels


def main(epochs: int = 3, sparsity: float = 0.9, seed: int = 0):
    torch.manual_seed(seed)
    inputs, labels = synthetic_signals(512, torch.Generator().manual_seed(seed))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(inputs, labels), batch_size=32, shuffle=True)
    model = SignalNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    engine = sparsify(model, optimizer, sparsity=sparsity, total_steps=len(loader) * epochs, acq="ee",
                      acq_options={"c": 1e-3}, update_interval=10, seed=seed)
    for epoch in range(epochs):
        engine.mark_epoch()
        for batch, targets in loader:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(batch), targets).backward()
            engine.step()  # mask update when due, optimizer.step(), inactive weights back to 0
        accuracy = (model(inputs).argmax(dim=1) == labels).float().mean().item()
        print(f"epoch {epoch + 1}: accuracy {accuracy:.3f}, {engine.summary()}")
    for name, layer in engine.stats()["layers"].items():
        print(f"{name:22s} {layer['active']:5d} of {layer['numel']:5d} active")
    print(engine)
    return model, engine


if __name__ == "__main__":
    main()
