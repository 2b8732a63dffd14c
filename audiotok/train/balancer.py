"""EnCodec's loss balancer: weights say each loss's share of the gradient, not its scale.

The losses on the decoded audio (L1, mel, adversarial, feature matching) have magnitudes
that differ by orders and drift during training; a fixed weighted sum would let one of
them dominate. The balancer instead takes each loss's gradient with respect to the decoded
audio ``y``, divides it by (an EMA of) its own norm, and mixes the normalised gradients in
the proportions of the weights, scaled to ``total_norm``::

    g_i = d loss_i / d y            n_i = EMA(||g_i||)
    g   = total_norm * sum_i (w_i / sum_j w_j) * g_i / n_i
    y.backward(g)

so a loss with weight 2 moves the model twice as much as one with weight 1, whatever their
values. Norms are taken per batch item and averaged, as audiocraft's ``per_batch_item``.
"""

from __future__ import annotations

import torch
from torch import Tensor


class Balancer:
    """Balances losses by their gradient norms on a shared output.

    Args:
        weights: Loss name -> relative weight.
        total_norm: Norm of the combined gradient.
        ema_decay: Decay of the running gradient norms.
        epsilon: Keeps a vanishing gradient from being blown up.
    """

    def __init__(
        self,
        weights: dict[str, float],
        total_norm: float = 1.0,
        ema_decay: float = 0.999,
        epsilon: float = 1e-12,
    ) -> None:
        self.weights = dict(weights)
        self.total_norm, self.ema_decay, self.epsilon = total_norm, ema_decay, epsilon
        # Bias-corrected EMA, as audiocraft's averager: (sum, count) per loss.
        self.ema_sum: dict[str, float] = {}
        self.ema_count: dict[str, float] = {}

    def backward(self, losses: dict[str, Tensor], output: Tensor) -> dict[str, float]:
        """Back-propagates the balanced gradient of ``losses`` through ``output``.

        Args:
            losses: Name -> scalar loss computed from ``output``; names must be in the weights.
            output: The decoded audio ``[B, C, T]`` the losses depend on.

        Returns:
            The gradient norm of each loss (for logging).
        """
        grads, norms = {}, {}
        for name, loss in losses.items():
            (grad,) = torch.autograd.grad(loss, [output], retain_graph=True)
            grads[name] = grad
            norms[name] = float(grad.flatten(1).norm(dim=1).mean())
        for name, norm in norms.items():
            decay = self.ema_decay
            self.ema_sum[name] = decay * self.ema_sum.get(name, 0.0) + norm
            self.ema_count[name] = decay * self.ema_count.get(name, 0.0) + 1.0
        total_weight = sum(self.weights[name] for name in losses)
        combined = torch.zeros_like(output)
        for name, grad in grads.items():
            average = self.ema_sum[name] / self.ema_count[name]
            scale = self.total_norm * self.weights[name] / total_weight / (average + self.epsilon)
            combined.add_(grad, alpha=scale)
        output.backward(combined)
        return norms

    def state_dict(self) -> dict[str, dict[str, float]]:
        """The running norms (JSON-serialisable; floats round-trip exactly through JSON)."""
        return {"ema_sum": dict(self.ema_sum), "ema_count": dict(self.ema_count)}

    def load_state_dict(self, state: dict[str, dict[str, float]]) -> None:
        """Restores :meth:`state_dict`."""
        self.ema_sum = {k: float(v) for k, v in state["ema_sum"].items()}
        self.ema_count = {k: float(v) for k, v in state["ema_count"].items()}
