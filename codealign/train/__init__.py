"""Training on execution rewards: PPO (with the three factors of Xu et al. 2024), DPO, DPO-Iter."""
